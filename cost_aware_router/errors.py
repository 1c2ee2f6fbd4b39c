"""User-facing errors.

Every problem a user can cause (a bad file, a bad flag, a mismatch between a router and a
pool) is raised as :class:`RouterError` with one readable line. The CLI turns it into exit
code 2 and a line on stderr; the ComfyUI nodes let it propagate so ComfyUI shows the text.
"""


class RouterError(Exception):
    """A problem with the user's input, files or settings, described in one line."""


class DataError(RouterError):
    """A scored-generations folder or file that cannot be read."""


class RouterFileError(RouterError):
    """A router file that is missing, corrupt, unsafe or inconsistent."""


# Named by the package that exports them (``from cost_aware_router import RouterError``), not by this file's
# import path: ComfyUI shows an error's type as ``module.qualname``, and it imports the pack under its folder's
# full path, which made ``/…/custom_nodes/<pack>.cost_aware_router.errors.RouterError`` of a one-line message.
for _cls in (RouterError, DataError, RouterFileError):
    _cls.__module__ = "cost_aware_router"
del _cls
