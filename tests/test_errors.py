"""``check_choice``: the one wording of "unknown X, use one of ..."."""

from __future__ import annotations

import pytest

from fdta_core.errors import ConfigError, FDTAError, InputError, check_choice


def test_known_value_is_returned():
    assert check_choice("FDTAAgeShifter", "sampling", "even", ("even", "random")) == "even"
    assert check_choice(None, "preset", "r50", {"r18": 1, "r50": 2}) == "r50"


def test_unknown_value_names_node_input_and_choices():
    with pytest.raises(InputError) as info:
        check_choice("FDTAACGSampler", "control_assignment", "zzz", ("random", "cycle"))
    err = info.value
    assert err.where == "FDTAACGSampler.control_assignment"
    assert "unknown control assignment 'zzz'" in str(err)
    assert err.fix == "use one of random, cycle."
    assert "did you mean" not in str(err)


def test_close_spelling_suggests_the_choice():
    with pytest.raises(InputError) as info:
        check_choice(None, "style_policy", "subjet", ("random", "subject", "grid"))
    assert str(info.value).startswith("style_policy: unknown style policy 'subjet'")
    assert "did you mean 'subject'? Use one of random, subject, grid." in str(info.value)


def test_error_class_what_and_extra_fix():
    with pytest.raises(ConfigError) as info:
        check_choice(None, "network", "r51", ("r18", "r50"), error=ConfigError, fix="or give layers 1,1,1,1")
    assert isinstance(info.value, FDTAError)
    assert info.value.fix == "did you mean 'r50'? Use one of r18, r50 (or give layers 1,1,1,1)."
    with pytest.raises(InputError, match="unknown JPEG backend 'x'"):
        check_choice(None, "jpeg_backend", "x", ("pillow",), what="JPEG backend")


def test_library_callers_use_it():
    from fdta_core.acg.edges import EdgeSettings
    from fdta_core.age.shift import AgeTargets

    with pytest.raises(InputError, match="did you mean 'canny'"):
        EdgeSettings(method="cany")
    with pytest.raises(InputError, match="unknown age mode 'lst'"):
        AgeTargets(mode="lst")
