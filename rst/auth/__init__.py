"""Authentication and per-AE authorisation (``[auth]``).

The data flow reads from the file names: ``settings.py`` (the section) → ``authenticate.py``
(the ``Authorization`` header: ``tokens.py`` static API tokens, ``passwords.py`` HTTP Basic
users, ``oidc.py`` bearer JWTs checked against ``jwks.py``'s keys) → ``guard.py`` (the one
check before every route: ``grants.py`` decides) → the route, with the caller's ``identity.py``
on the request. ``exposure.py`` holds the rule that keeps rst from serving a network without
authentication by default.
"""

from rst.auth.authenticate import Authenticator
from rst.auth.exposure import exposure_problem, exposure_warnings
from rst.auth.grants import Grants
from rst.auth.guard import identity, install_guard, may_use
from rst.auth.identity import Identity
from rst.auth.settings import AuthConfig, GrantConfig, TokenConfig, UserConfig

__all__ = [
    "AuthConfig",
    "Authenticator",
    "GrantConfig",
    "Grants",
    "Identity",
    "TokenConfig",
    "UserConfig",
    "exposure_problem",
    "exposure_warnings",
    "identity",
    "install_guard",
    "may_use",
]
