"""ticktape replayer: serve logs over Socket.IO at any speed, to many clients."""

from replayer.app import make_app
from replayer.config import ServerConfig

__all__ = ["ServerConfig", "make_app"]
