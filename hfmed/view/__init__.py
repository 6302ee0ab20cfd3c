"""``hfmed view``: browse a build folder on localhost as the Hub's viewer will show it, and look inside 3D volumes.

``start(folder, host=..., port=...)`` opens the server and returns a :class:`Viewer`; its ``run()``
serves until Ctrl-C. The page (``static/``) ships in the package and loads nothing from the network.
"""

from hfmed.view.server import Viewer, start

__all__ = ["Viewer", "start"]
