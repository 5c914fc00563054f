"""Beam's `get_signature`, remembered per function.

While it builds and runs a pipeline, Beam asks `inspect.signature` about the methods of every DoFn again and
again (is it stateful? does process take a window? what do start_bundle and teardown take?): ~22,000 calls
for `openwit build`'s pipeline, about 115 distinct functions, ~0.5 s of every build's start-up. A function's
signature is fixed by the function (its code, defaults and annotations, which nothing here rewrites once the
pipeline is built), and a bound method's by its function (without the first parameter, whatever the
instance), so the answer for a plain function or a method of one is kept; anything else (partials, callable
objects, builtins) is asked every time, as before. The answers are Beam's own, returned as they are.

`install()` puts the cached version where Beam's modules call it; pipeline.build_wit installs it on import,
so the launcher and every worker that unpickles its DoFns use it.
"""

import importlib
import threading
import types
import weakref

from apache_beam.typehints import decorators

# The modules that call get_signature by a name of their own (`from ... import get_signature`).
_CALLERS = ("apache_beam.typehints.decorators", "apache_beam.transforms.core", "apache_beam.transforms.ptransform",
            "apache_beam.transforms.util")

_beam_get_signature = decorators.get_signature
# Weak keys: a function Beam no longer holds (a DoFn of a finished pipeline) leaves the cache with it.
_cache = (weakref.WeakKeyDictionary(), weakref.WeakKeyDictionary())  # plain functions, bound methods
_lock = threading.Lock()


def _key(func) -> tuple | None:
    if type(func) is types.FunctionType:
        return func, 0
    if type(func) is types.MethodType and type(func.__func__) is types.FunctionType:
        return func.__func__, 1
    return None


def get_signature(func):
    """decorators.get_signature(func), computed once per function (see the module's docstring)."""
    key = _key(func)
    if key is None:
        return _beam_get_signature(func)
    function, bound = key
    signature = _cache[bound].get(function)
    if signature is None:
        signature = _beam_get_signature(func)
        with _lock:
            _cache[bound][function] = signature
    return signature


def install() -> None:
    for name in _CALLERS:
        module = importlib.import_module(name)
        if getattr(module, "get_signature", None) is _beam_get_signature:
            module.get_signature = get_signature
