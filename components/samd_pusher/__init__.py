from components.samd_pusher.component import SamdPusher  # noqa: F401
