"""The API documentation page ``/docs`` (Swagger UI), served offline.

FastAPI's own ``/docs`` and ``/redoc`` pages load their scripts, styles, fonts and icon from
CDNs, so they are blank without a network. This module follows FastAPI's documented
self-hosting recipe instead: the app is built with ``docs_url=None, redoc_url=None``, the
Swagger UI files come from the installed ``fastapi-offline`` package (which ships
``swagger-ui-bundle.js``, ``swagger-ui.css`` and ``favicon.png``) through a
:class:`~starlette.staticfiles.StaticFiles` mount at :data:`ASSETS_URL`, and ``/docs`` is
:func:`fastapi.openapi.docs.get_swagger_ui_html` pointed at them. Swagger UI's online
validator (an image from an outside host) is turned off.

ReDoc is not served: its bundle always draws a logo image from an outside host, and no page
of the service may reference one. With an access token, the OpenAPI schema declares a bearer
scheme on the ``/api`` operations, so that Swagger UI's *Authorize* button sends the token.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.staticfiles import StaticFiles

from anyseg.serve.errors import ApiError

__all__ = ["ASSETS_URL", "DOCS_REQUIREMENT", "DOCS_URL", "SWAGGER_PARAMETERS", "add_bearer_scheme",
           "docs_assets_dir", "install_docs"]

DOCS_URL = "/docs"
ASSETS_URL = "/docs-assets"
#: the package whose files the page uses, as a requirement line
DOCS_REQUIREMENT = "fastapi-offline>=1.7.7"
#: Swagger UI settings on top of FastAPI's defaults: no online validator (an outside host)
SWAGGER_PARAMETERS = {"validatorUrl": None}
ASSET_FILES = ("swagger-ui-bundle.js", "swagger-ui.css", "favicon.png")
BEARER_SCHEME = "token"


def docs_assets_dir() -> Path | None:
    """The folder of the installed ``fastapi-offline`` package's Swagger UI files, or ``None`` if it is missing."""
    from importlib import resources

    try:
        folder = resources.files("fastapi_offline") / "static"
    except ModuleNotFoundError:
        return None
    path = Path(str(folder))
    return path if all((path / name).is_file() for name in ASSET_FILES) else None


def install_docs(app: Any, bearer: bool = False) -> None:
    """Serve ``/docs`` (Swagger UI from local files) and its assets on a FastAPI ``app``.

    ``app`` must have been built with ``docs_url=None`` and ``redoc_url=None``. Without the
    ``fastapi-offline`` package ``/docs`` answers a one-line ``404`` naming it. ``bearer``
    declares the access token in the OpenAPI schema (:func:`add_bearer_scheme`).
    """
    folder = docs_assets_dir()
    if folder is not None:
        app.mount(ASSETS_URL, StaticFiles(directory=folder), name="docs-assets")

    @app.get(DOCS_URL, include_in_schema=False)
    def swagger_ui(request: Request):
        if folder is None:
            raise ApiError(404, f"the API docs page needs the {DOCS_REQUIREMENT!r} package "
                                f"(pip install '{DOCS_REQUIREMENT}'); the schema itself is at {app.openapi_url}")
        root = request.scope.get("root_path", "")
        return get_swagger_ui_html(
            openapi_url=f"{root}{app.openapi_url}", title=f"{app.title} API",
            swagger_js_url=f"{root}{ASSETS_URL}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{ASSETS_URL}/swagger-ui.css",
            swagger_favicon_url=f"{root}{ASSETS_URL}/favicon.png",
            swagger_ui_parameters=SWAGGER_PARAMETERS,
        )

    if bearer:
        add_bearer_scheme(app)


def add_bearer_scheme(app: Any) -> None:
    """Declare ``Authorization: Bearer <token>`` on every ``/api`` operation of ``app``'s OpenAPI schema.

    Wraps ``app.openapi`` (FastAPI's documented way of extending the schema); the schema is
    still built once and cached.
    """
    build = app.openapi

    def openapi() -> dict:
        if app.openapi_schema is None:
            schema = build()
            schemes = schema.setdefault("components", {}).setdefault("securitySchemes", {})
            schemes[BEARER_SCHEME] = {"type": "http", "scheme": "bearer",
                                      "description": "the access token given to anyseg serve (--token or ANYSEG_TOKEN)"}
            for path, item in schema.get("paths", {}).items():
                if path == "/api" or path.startswith("/api/"):
                    for operation in item.values():
                        if isinstance(operation, dict):
                            operation["security"] = [{BEARER_SCHEME: []}]
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi
