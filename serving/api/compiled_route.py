"""An ``APIRoute`` that validates a route's path and query parameters with one pydantic call.

FastAPI resolves each parameter on every request through its generic dependency
machinery, which inspects each field's type again every time; on the
recommendations route, with eleven query parameters, that cost as much CPU as
the recommendation itself (README: measurements). ``CompiledRoute`` builds one
pydantic model from the endpoint's own declarations when the route is created,
so the parameters keep one definition: the OpenAPI document is FastAPI's, and a
request the model refuses is handed to FastAPI's own handler, which answers its
usual 422 naming the field.

Only simple routes are compiled: an async endpoint that returns a ``Response``
itself, with path and query parameters only, whose dependencies are async
functions (or async callables, such as ``serving.api.security``'s scope guards) of the
request alone, named or the router's. Any other route, and any request while an
app's ``dependency_overrides`` are set (tests), takes FastAPI's handler.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, cast

from fastapi import Request, Response
from fastapi._compat import ModelField, field_annotation_is_sequence
from fastapi.dependencies.models import Dependant
from fastapi.dependencies.utils import get_typed_return_annotation
from fastapi.routing import APIRoute
from pydantic import BaseModel, ValidationError, create_model


@dataclass(frozen=True)
class CompiledParams:
    """The parameters of one endpoint as one model, and its request-only dependencies."""

    model: type[BaseModel]
    path: tuple[str, ...]  # aliases
    query: tuple[tuple[str, bool], ...]  # (alias, whether it repeats)
    dependencies: tuple[tuple[str | None, Callable[[Request], Awaitable[Any]]], ...]  # (argument or None, call)

    @classmethod
    def of(cls, dependant: Dependant) -> CompiledParams | None:
        """The compiled parameters of ``dependant``'s endpoint, or None where it is not a simple route."""
        call = dependant.call
        if call is None or not _plain_async(call) or not _returns_response(call):
            return None
        if dependant.header_params or dependant.cookie_params or dependant.body_params or _special(dependant):
            return None
        dependencies = []
        for sub in dependant.dependencies:
            if (sub.call is None or not sub.is_coroutine_callable or sub.is_async_gen_callable or sub.dependencies
                    or sub.path_params or sub.query_params or sub.header_params or sub.cookie_params
                    or sub.body_params or sub.request_param_name is None or _special(sub, but_request=True)):
                return None
            dependencies.append((sub.name, sub.call))
        fields: list[ModelField] = [*dependant.path_params, *dependant.query_params]
        model = create_model(  # type: ignore[call-overload]
            f"{call.__name__}_parameters", **{field.name: (field.field_info.annotation, field.field_info) for field in fields})
        return cls(
            model=model,
            path=tuple(field.alias for field in dependant.path_params),
            query=tuple((field.alias, field_annotation_is_sequence(cast(Any, field.field_info.annotation)))
                        for field in dependant.query_params),
            dependencies=tuple(dependencies),
        )

    async def arguments(self, request: Request) -> dict[str, Any] | None:
        """The endpoint's arguments for ``request``, or None when a parameter is invalid.

        As FastAPI reads them: a repeated parameter is every value given (its default
        when none is), any other the last value given; unknown parameters are ignored.
        """
        values: dict[str, Any] = {alias: request.path_params[alias] for alias in self.path}
        given = request.query_params
        for alias, repeats in self.query:
            if repeats:
                if found := given.getlist(alias):
                    values[alias] = found
            elif (value := given.get(alias)) is not None:
                values[alias] = value
        try:
            arguments = dict(self.model.model_validate(values))
        except ValidationError:
            return None
        for name, dependency in self.dependencies:  # in order: a router's (the scope guard) before the endpoint's
            found = await dependency(request)
            if name is not None:
                arguments[name] = found
        return arguments


class CompiledRoute(APIRoute):
    """An ``APIRoute`` whose simple endpoints take their parameters from ``CompiledParams``."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        standard = super().get_route_handler()
        compiled = CompiledParams.of(self.dependant)
        if compiled is None:
            return standard
        endpoint = self.dependant.call
        assert endpoint is not None
        provider = self.dependency_overrides_provider

        async def handler(request: Request) -> Response:
            if provider is not None and getattr(provider, "dependency_overrides", None):
                return await standard(request)
            arguments = await compiled.arguments(request)
            return await standard(request) if arguments is None else await endpoint(**arguments)

        return handler


def _plain_async(call: Callable[..., Any]) -> bool:
    return inspect.iscoroutinefunction(call) and not inspect.isasyncgenfunction(call)


def _returns_response(call: Callable[..., Any]) -> bool:
    annotation = get_typed_return_annotation(call)
    return inspect.isclass(annotation) and issubclass(annotation, Response)


def _special(dependant: Dependant, but_request: bool = False) -> bool:
    """Whether ``dependant`` takes one of the objects FastAPI injects (the request, the response, ...)."""
    return any(name is not None for name in (
        None if but_request else dependant.request_param_name, dependant.websocket_param_name,
        dependant.http_connection_param_name, dependant.response_param_name,
        dependant.background_tasks_param_name, dependant.security_scopes_param_name))
