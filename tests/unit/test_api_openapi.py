"""The OpenAPI document is generated from the declarations and lists exactly the app's routes."""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis
import sqlalchemy as sa
from aiohttp import web
from rowcast.api import openapi
from rowcast.api.app import create_app, setup
from rowcast.api.fields import Limits
from rowcast.api.resources import RESOURCES, Resource
from rowcast.db.models import Versioned
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from rowcast.settings import Settings

SECRET = "unit-secret-unit-secret-unit-secret"
METHODS = {"get", "put", "post", "delete", "patch", "head", "options", "trace"}


def config(auth: str = "open") -> Settings:
    # Nothing connects until the app starts, so an address nobody listens on is fine here.
    return Settings(database_url="postgresql://unused@127.0.0.1:1/x", auth=auth, jwt_secret=SECRET)


def routes(app: web.Application) -> set[tuple[str, str]]:
    found = set()
    for route in app.router.routes():
        info = route.resource.get_info() if route.resource is not None else {}
        path = info.get("path") or info.get("formatter")
        if path and (path == "/api" or path.startswith("/api/")):
            found.add((route.method.lower(), path))
    return found


def documented(document: dict[str, Any]) -> set[tuple[str, str]]:
    return {
        (method, path) for path, item in document["paths"].items() for method in item if method in METHODS
    }


@pytest.mark.parametrize("auth", ["open", "token"])
def test_every_api_route_is_in_the_document_and_every_documented_operation_is_routed(auth: str) -> None:
    app = create_app(config(auth))
    assert routes(app) == documented(openapi.document(RESOURCES, config(auth)))
    assert ("get", "/api/books/{id}") in routes(app) and ("post", "/api/authors") in routes(app)


@pytest.mark.parametrize("auth", ["open", "token"])
def test_document_is_valid_openapi_3_1(auth: str) -> None:
    document = openapi.document(RESOURCES, config(auth))
    assert document["openapi"] == "3.1.0"
    schemathesis.openapi.from_dict(document).validate()


def test_token_mode_document_declares_bearer_security_and_every_status_a_write_can_return() -> None:
    document = openapi.document(RESOURCES, config("token"))
    assert document["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    patch = document["paths"]["/api/books/{id}"]["patch"]
    assert patch["security"] == [{"bearer": []}]
    assert set(patch["responses"]) == {
        "200",
        "400",
        "401",
        "403",
        "404",
        "412",
        "413",
        "415",
        "422",
        "428",
        "503",
    }
    assert patch["responses"]["412"]["content"]["application/json"]["schema"]["$ref"].endswith("BookStale")
    assert "security" not in document["paths"]["/api/healthz"]["get"]


def test_open_mode_document_has_no_auth_statuses() -> None:
    document = openapi.document(RESOURCES, config("open"))
    assert "securitySchemes" not in document["components"]
    assert "401" not in document["paths"]["/api/books"]["get"]["responses"]


def test_schemas_follow_the_model_and_the_declared_limits() -> None:
    schemas = openapi.document(RESOURCES, config())["components"]["schemas"]
    create, replace, patch = schemas["BookCreate"], schemas["BookReplace"], schemas["BookPatch"]
    assert create["required"] == ["title"]
    assert replace["required"] == ["title", "author", "num_pages", "owner"]
    assert patch["minProperties"] == 1 and "required" not in patch
    assert create["properties"]["title"] == {"type": "string", "minLength": 1, "maxLength": 300}
    assert create["properties"]["num_pages"] == {"type": ["integer", "null"], "minimum": 1, "maximum": 100000}
    assert "id" not in create["properties"] and "version" not in create["properties"]
    assert schemas["Book"]["properties"]["updated_at"] == {"type": "string", "format": "date-time"}
    assert set(schemas["Author"]["required"]) == {
        "id",
        "name",
        "born",
        "owner",
        "version",
        "created_at",
        "updated_at",
    }


class _Base(DeclarativeBase):
    pass


class Shelf(Versioned, _Base):
    __tablename__ = "shelves"
    id: Mapped[int] = mapped_column(sa.Integer, sa.Identity(), primary_key=True)
    label: Mapped[str] = mapped_column(sa.String(50), nullable=False)


def test_a_new_resource_is_a_model_plus_one_declaration() -> None:
    shelves = Resource(Shelf, writable={"label": Limits(min_length=1)})
    app = web.Application()
    setup(app, config(), resources=(*RESOURCES, shelves))
    document = openapi.document((*RESOURCES, shelves), config())
    assert {("get", "/api/shelves"), ("post", "/api/shelves"), ("patch", "/api/shelves/{id}")} <= routes(app)
    assert routes(app) == documented(document)
    assert document["components"]["schemas"]["ShelfCreate"]["properties"]["label"]["maxLength"] == 50


def test_declaring_an_unknown_column_fails_at_declaration() -> None:
    with pytest.raises(ValueError, match="no such column"):
        Resource(Shelf, writable={"lable": Limits()})
