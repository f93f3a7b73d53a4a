"""Property tests for the text pipeline: what must hold for any input."""

import re

from hypothesis import given, settings, strategies as st

from tests.conftest import valid_id
from triage.text.normalise import clean, id_checksum_ok, mask_pii, normalize, segment

cjk = st.characters(min_codepoint=0x4E00, max_codepoint=0x9FA5)
messy = st.text(alphabet=st.one_of(cjk, st.characters(codec="utf-8")), max_size=80)


@settings(max_examples=150, deadline=None)
@given(messy)
def test_normalize_is_idempotent(s):
    once = normalize(s)
    assert normalize(once) == once


@settings(max_examples=150, deadline=None)
@given(st.text(alphabet=cjk, max_size=60))
def test_segmentation_never_loses_characters(s):
    assert "".join(segment(s)) == s


@settings(max_examples=100, deadline=None)
@given(st.text(alphabet=cjk, max_size=20), st.from_regex(r"1[3-9][0-9]{9}", fullmatch=True),
       st.from_regex(r"[1-6][0-9]{5}(19|20)[0-9]{2}(0[1-9]|1[0-2])(0[1-9]|1[0-9]|2[0-8])[0-9]{3}", fullmatch=True),
       st.text(alphabet=cjk, max_size=20))
def test_masking_never_leaves_a_phone_or_valid_id_behind(a, phone, id17, b):
    idno = valid_id(id17)
    out = clean(f"{a}电话{phone}，身份证{idno}{b}").text
    assert phone not in out and idno not in out
    for run in re.findall(r"\d{11,18}[\dXx]?", out):
        assert not id_checksum_ok(run) and not re.fullmatch(r"1[3-9]\d{9}", run)


@settings(max_examples=100, deadline=None)
@given(messy)
def test_masking_is_idempotent(s):
    m = clean(s).text
    assert mask_pii(m).text == m
