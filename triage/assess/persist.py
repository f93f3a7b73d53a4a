"""skops, imported without the walk that made every command start two seconds late.

skops builds its default trusted list at import time with ``sklearn.utils.all_estimators()``, which
walks every scikit-learn package with ``pkgutil.walk_packages``. That walk imports each *package* to
look inside it, including the ones ``all_estimators`` then ignores (``externals``, ``tests``, private
``_…`` packages): ``sklearn.externals.array_api_compat.torch`` imports PyTorch wherever it is installed
(the dev environment, an office with the sentence-transformers backend). Measured on the 2-core
machine: ``import skops.io`` 3.5-4.0 s, of which the walk about 2.6 s and PyTorch 1.7 s; every
command that loads a model, every service worker and every child process that re-clusters paid it.

:func:`estimators_pruned` lists the same estimators (the same names and classes, tested against
scikit-learn's own function) but does not descend into a package whose every module
``all_estimators`` would skip, so nothing ignored is imported. It stands in for
``sklearn.utils.all_estimators`` only while skops is imported, so skops trusts exactly what it
would have trusted (tested: skops's list of trusted scikit-learn types is the same). Where
scikit-learn no longer has the rule it is built on (``discovery._MODULE_TO_IGNORE``), skops is
imported plainly.
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import pkgutil
import warnings
from collections.abc import Iterator
from operator import itemgetter
from pathlib import Path

import sklearn
import sklearn.utils
from sklearn.base import BaseEstimator
from sklearn.utils import discovery


_IGNORED = getattr(discovery, "_MODULE_TO_IGNORE", None)


def _skipped(module_name: str) -> bool:
    """``all_estimators``'s own rule: a module in an ignored part or below a private name."""
    return any(part in _IGNORED for part in module_name.split(".")) or "._" in module_name


def _public_modules(path: list[str], prefix: str) -> Iterator[str]:
    # a skipped package's descendants carry its name, so they are skipped too: never import it
    for info in pkgutil.iter_modules(path, prefix):
        if _skipped(info.name):
            continue
        yield info.name
        if info.ispkg:
            try:
                package = importlib.import_module(info.name)
            except ImportError:  # walk_packages drops such a package's subtree silently too
                continue
            yield from _public_modules(list(getattr(package, "__path__", None) or []), info.name + ".")


def estimators_pruned() -> list[tuple[str, type]]:
    """``sklearn.utils.all_estimators()`` (no type filter) without importing what it ignores."""
    found: set[tuple[str, type]] = set()
    with warnings.catch_warnings():   # as all_estimators: deprecations raised by importing its modules are not the user's
        warnings.simplefilter("ignore", FutureWarning)
        for name in _public_modules([str(Path(sklearn.__file__).parent)], "sklearn."):
            module = importlib.import_module(name)
            found.update((n, c) for n, c in inspect.getmembers(module, inspect.isclass) if not n.startswith("_"))
    estimators = {(n, c) for n, c in found if issubclass(c, BaseEstimator) and n != "BaseEstimator"}
    estimators = {(n, c) for n, c in estimators if not getattr(c, "__abstractmethods__", None)}
    return sorted(estimators, key=itemgetter(0))


@contextlib.contextmanager
def _pruned_discovery() -> Iterator[None]:
    def all_estimators(type_filter=None):
        if type_filter is not None:  # not what skops asks; leave any other caller to scikit-learn
            return original(type_filter)
        return estimators_pruned()

    original = sklearn.utils.all_estimators
    if _IGNORED is None:   # a scikit-learn whose walk this does not know: leave it alone
        yield
        return
    sklearn.utils.all_estimators = all_estimators
    try:
        yield
    finally:
        sklearn.utils.all_estimators = original


with _pruned_discovery():
    import skops.io as sio  # noqa: E402

__all__ = ["sio", "estimators_pruned"]
