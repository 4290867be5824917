"""The attribute editor's spec model (web/js/fdta_spec_model.js) run under Node.js: proportions always sum
to 100 %, its JSON formatting round-trips, its age bins are the parser's. Skips without ``node`` (the
browser tests in tests/comfy/test_frontend_live.py drive the same module in Chromium)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from fdta_core.prompts.spec import default_spec_text, parse_spec

MODEL = Path(__file__).resolve().parents[1] / "web" / "js" / "fdta_spec_model.js"

SCRIPT = r"""
const m = await import(process.argv[1]);
const spec = JSON.parse(process.argv[2]);
const out = {};
// random share edits keep the total at exactly 100.0 % and every value >= 0.1 %
let rows = m.valuesToRows(spec.fields.race.values);
let seed = 7;
const rand = () => ((seed = (seed * 1103515245 + 12345) % 2147483648) / 2147483648);
out.sums = [];
out.mins = [];
for (let k = 0; k < 200; k++) {
  const i = Math.floor(rand() * rows.length);
  m.setShare(rows, i, Math.floor(rand() * 1100) - 50);
  out.sums.push(rows.reduce((a, r) => a + r.tenths, 0));
  out.mins.push(Math.min(...rows.map((r) => r.tenths)));
}
const g = m.valuesToRows(spec.fields.gender.values);
m.setShare(g, 0, 700);
out.gender = m.rowsToValues(g, false);
out.equalList = m.rowsToValues(m.equalShares(m.valuesToRows(["a", "b", "c"])), true);
out.formatted = m.formatSpec(spec);
out.ageBins = m.ageBins(spec.fields.age).map((b) => b.label);
out.hairCases = m.caseKeys(spec, "gender");
console.log(JSON.stringify(out));
"""


def test_spec_model_under_node() -> None:
    node = shutil.which("node") or shutil.which("nodejs")
    if node is None:
        pytest.skip("node is not installed (the browser tests cover the editor)")
    text = default_spec_text()
    proc = subprocess.run(
        [node, "--input-type=module", "-e", SCRIPT, MODEL.as_uri(), text],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert set(out["sums"]) == {1000} and min(out["mins"]) >= 1
    assert out["gender"] == {"female": 0.7, "male": 0.3}
    assert out["equalList"] == ["a", "b", "c"]
    # what the editor writes parses to the same object and the same spec (hash) as the text it came from
    assert json.loads(out["formatted"]) == json.loads(text)
    assert parse_spec(out["formatted"]).hash == parse_spec(text).hash
    assert out["ageBins"] == list(parse_spec(text).age.labels)
    assert out["hairCases"] == ["female", "male"]
