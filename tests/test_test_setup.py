"""The test set-up itself: temporary TP_HOMEs seeded with the quick demo by hard links (conftest.py), and whether the
real-browser tests run, skip or fail (ui_support.browser_verdict)."""
import os
from pathlib import Path

import pytest

import ui_support
from conftest import seed_home
from ui_support import browser_verdict


def test_browser_verdict_fails_without_chromium_or_playwright_unless_opted_out(tmp_path):
    chromium = tmp_path / "chromium"
    chromium.write_text("#!/bin/sh\n")
    missing = str(tmp_path / "no-chromium")
    assert browser_verdict(str(chromium), True, None) == ("run", "")
    assert browser_verdict(str(chromium), True, "0") == ("run", "")
    verdict, why = browser_verdict(missing, True, None)
    assert verdict == "fail" and missing in why and "TP_SKIP_BROWSER=1" in why
    verdict, why = browser_verdict(str(chromium), False, "")
    assert verdict == "fail" and "playwright" in why
    verdict, why = browser_verdict(str(tmp_path), True, None)  # a folder is no browser
    assert verdict == "fail"
    for has_playwright in (True, False):
        verdict, why = browser_verdict(missing, has_playwright, "1")
        assert verdict == "skip" and "TP_SKIP_BROWSER=1" in why


def test_require_browser_fails_on_a_missing_executable_and_skips_when_opted_out(tmp_path, monkeypatch):
    monkeypatch.setattr(ui_support, "CHROMIUM", str(tmp_path / "missing" / "chromium"))
    monkeypatch.delenv("TP_SKIP_BROWSER", raising=False)
    with pytest.raises(pytest.fail.Exception, match="not installed"):
        ui_support.require_browser()
    monkeypatch.setenv("TP_SKIP_BROWSER", "1")
    with pytest.raises(pytest.skip.Exception, match="opted out"):
        ui_support.require_browser()


def test_a_unit_test_runs_on_an_empty_temporary_home():
    home = Path(os.environ["TP_HOME"])
    assert home != Path.home() / ".cache" / "taskprune" and not home.exists()


def test_seeded_homes_share_the_demo_by_links_and_do_not_leak_changes(tmp_path):
    demo = tmp_path / "build" / "models" / "demo-quick"
    demo.mkdir(parents=True)
    (demo / "encoder.safetensors").write_bytes(b"weights")
    one, two = seed_home(tmp_path / "one", demo), seed_home(tmp_path / "two", demo)
    copy = one / "models" / "demo-quick" / "encoder.safetensors"
    assert copy.read_bytes() == b"weights" and os.path.samefile(copy, demo / "encoder.safetensors")
    # what tests do to their copy (model.save renames a new folder in; a test removes the folder)
    copy.unlink()
    copy.write_bytes(b"other")
    assert (demo / "encoder.safetensors").read_bytes() == b"weights"
    assert (two / "models" / "demo-quick" / "encoder.safetensors").read_bytes() == b"weights"


@pytest.mark.integration
def test_an_integration_test_home_is_temporary_and_has_the_quick_demo():
    from tp_core.model import MANIFEST
    from tp_core.paths import demo_path

    assert Path(os.environ["TP_HOME"]) != Path.home() / ".cache" / "taskprune"
    assert (demo_path(quick=True) / MANIFEST).is_file()


@pytest.mark.llm
def test_an_llm_test_home_is_temporary_and_has_the_converted_smollm2_without_the_demo():
    from tp_core.llm_source import converted_folder, embedded_gguf
    from tp_core.paths import demo_path

    home = Path(os.environ["TP_HOME"])
    assert home != Path.home() / ".cache" / "taskprune"
    folder = converted_folder(embedded_gguf("smollm2"))
    assert folder is not None and folder.is_relative_to(home)
    assert not demo_path(quick=True).exists()


def test_one_browser_module_first_then_modules_without_the_demo_then_browser_modules_then_the_rest(request):
    from conftest import _module_rank

    order = [i.nodeid.split("::")[0] for i in request.session.items]
    modules = list(dict.fromkeys(order))
    assert order == sorted(order, key=modules.index)  # every module stays whole
    ranks = [_module_rank([i for i in request.session.items if i.nodeid.split("::")[0] == m]) for m in modules]
    if 1 in ranks:
        assert ranks[0] == 1
        ranks = ranks[1:]
    assert ranks == sorted(ranks)
