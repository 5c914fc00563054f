"""openwit.beam_signatures: Beam's get_signature remembered per function, with Beam's own answers."""

import functools

import apache_beam as beam
from apache_beam.transforms import core
from apache_beam.typehints import decorators

import pipeline.build_wit  # noqa: F401  (installs it, as in every build)
from openwit import beam_signatures
from pipeline.build_wit import CleanCaptionFn, MatchQueriesFn


class _Fn(beam.DoFn):
    def process(self, element, window=beam.DoFn.WindowParam, *args, extra: int = 3, **kwargs):
        yield element


def test_beam_calls_the_remembered_version_once_a_build_module_is_imported():
    assert core.get_signature is beam_signatures.get_signature
    assert decorators.get_signature is beam_signatures.get_signature


def test_same_answers_as_beam_for_functions_methods_and_the_rest():
    a, b = _Fn(), _Fn()
    cases = [
        a.process, b.process, _Fn.process, a.setup, b.start_bundle, beam.DoFn.process_batch,
        MatchQueriesFn("q.txt").process, CleanCaptionFn.__init__, lambda x, y=2: x,
        functools.partial(lambda x, y: x, 1), len, str.strip, sum, _Fn,
    ]
    for _ in range(2):  # the second round answers from the cache
        for f in cases:
            assert beam_signatures.get_signature(f) == beam_signatures._beam_get_signature(f), f
    # A bound method drops its first parameter whatever the instance; the plain function keeps it.
    assert list(beam_signatures.get_signature(b.process).parameters)[0] == "element"
    assert list(beam_signatures.get_signature(_Fn.process).parameters)[0] == "self"
    assert core.get_function_args_defaults(a.process) == (["element", "window"], [beam.DoFn.WindowParam])


def test_a_function_nobody_holds_leaves_the_cache():
    """Workers unpickle DoFns bundle after bundle: what Beam drops must not be kept alive by the cache."""
    import gc
    import weakref

    def make():
        return lambda element, extra=1: element

    fn = make()
    assert beam_signatures.get_signature(fn) == beam_signatures._beam_get_signature(fn)
    assert fn in beam_signatures._cache[0]
    alive = weakref.ref(fn)
    del fn
    gc.collect()
    assert alive() is None
