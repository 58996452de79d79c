"""hack/extract_pve_api_facts.py turns PVE's apidata.js into the facts the conformance test reads."""

from __future__ import annotations

import json
from pathlib import Path

import extract_pve_api_facts as extract

APIDATA_JS = """const apiSchema = [
  {"path": "/nodes", "text": "nodes", "leaf": 0, "info": {"GET": {"name": "index", "method": "GET",
     "description": "Cluster node index.", "permissions": {"user": "all"}, "returns": {"type": "array"},
     "parameters": {"additionalProperties": 0}}},
   "children": [{"path": "/nodes/{node}/lxc", "text": "lxc", "leaf": 1, "info": {"POST": {
     "name": "create_vm", "method": "POST", "proxyto": "node", "allowtoken": 1, "protected": 1,
     "description": "Create or restore a container.",
     "parameters": {"additionalProperties": 0, "properties": {
        "description": {"type": "string", "optional": 1, "maxLength": 8192, "description": "Notes."},
        "net[n]": {"type": "string", "optional": 1, "typetext": "<string>", "format": {
            "name": {"type": "string", "pattern": "[-_.\\\\w\\\\d]+", "format_description": "string"}}},
        "tags": {"type": "array", "optional": 1, "items": {"type": "string", "description": "a tag"}}}}}}}]}
];
let viewer = Ext.create('Ext.tree.Panel', {});
"""


def test_reads_apidata_js_and_keeps_validation_keywords_only(tmp_path: Path) -> None:
    source = tmp_path / "apidata.js"
    source.write_text(APIDATA_JS, encoding="utf-8")
    output = tmp_path / "facts.json"
    assert extract.main([str(source), "--pve-version", "9.1", "--source", "test", "--output", str(output)]) == 0

    document = json.loads(output.read_text(encoding="utf-8"))
    assert document["pveVersion"] == "9.1"
    assert set(document["paths"]) == {"/nodes", "/nodes/{node}/lxc"}
    create = document["paths"]["/nodes/{node}/lxc"]["POST"]
    assert create["name"] == "create_vm" and create["proxyto"] == "node"
    params = create["parameters"]["properties"]
    # A parameter *named* description survives; the documentation keyword inside it does not.
    assert params["description"] == {"type": "string", "optional": 1, "maxLength": 8192}
    assert params["net[n]"]["format"]["name"] == {"type": "string", "pattern": "[-_.\\w\\d]+"}
    assert "typetext" not in params["net[n]"]
    assert params["tags"]["items"] == {"type": "string"}
    assert "returns" not in document["paths"]["/nodes"]["GET"]


def test_the_committed_facts_cover_what_the_conformance_test_compares() -> None:
    facts = Path(__file__).resolve().parents[1] / "data" / "pve-api-9.1-facts.json"
    document = json.loads(facts.read_text(encoding="utf-8"))
    assert document["generatedBy"] == "hack/extract_pve_api_facts.py"
    create = document["paths"]["/nodes/{node}/lxc"]["POST"]["parameters"]["properties"]
    assert create["vmid"]["type"] == "integer" and create["vmid"]["minimum"] == 100
    assert "description" in create and "description" not in create["description"]
