"""Convert between ComfyUI's two workflow formats, given the node schemas (``/object_info``).

* **UI format** (what the editor saves and users share): ``nodes`` with positions, ``widgets_values``
  lists and ``links``.
* **API format** (what ``POST /prompt`` takes): ``{node_id: {class_type, inputs}}``.

The shipped workflows are written as API graphs and turned into UI files here; the headless runner
turns a user's edited UI file back into an API prompt, so a graph tuned in the editor runs at scale
unchanged. Widget order follows the schema (required, then optional inputs, in ``input_order``), and
seed widgets carry ComfyUI's extra *control after generate* value, always ``"fixed"``: FDTA never lets
the editor randomise a seed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .errors import ConfigError

WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
SEED_NAMES = {"seed", "noise_seed"}
#: Editor-only helper nodes that have no server-side class.
VIRTUAL_NODES = {"Reroute", "Note", "MarkdownNote", "PrimitiveNode"}
_CONTROL_VALUES = {"fixed", "increment", "decrement", "randomize"}


def _ordered_inputs(schema: Mapping[str, Any]) -> list[tuple[str, Any, dict]]:
    out = []
    order = schema.get("input_order", {})
    for section in ("required", "optional"):
        decls = schema.get("input", {}).get(section, {}) or {}
        names = order.get(section) or list(decls)
        for name in names:
            decl = decls[name]
            typ = decl[0]
            opts = decl[1] if len(decl) > 1 and isinstance(decl[1], dict) else {}
            out.append((name, typ, opts))
    return out


def is_widget(typ: Any, opts: Mapping[str, Any] | None = None) -> bool:
    """Whether the editor shows this input as a widget (and stores a value for it in ``widgets_values``):
    a widget type, unless declared ``forceInput`` (then it is a plain socket, like ``control_parameters``)."""
    if opts and opts.get("forceInput"):
        return False
    return isinstance(typ, list) or typ in WIDGET_TYPES


def has_control_widget(name: str, typ: Any, opts: Mapping[str, Any]) -> bool:
    """Whether the editor adds a *control after generate* widget after this one."""
    if typ != "INT":
        return False
    flag = opts.get("control_after_generate")
    return bool(flag) or (flag is None and name in SEED_NAMES)


def _schema(object_info: Mapping[str, Any], cls: str, where: str) -> Mapping[str, Any]:
    try:
        return object_info[cls]
    except KeyError:
        raise ConfigError(
            f"node type {cls!r} is not known to this ComfyUI",
            where=where,
            fix="install the custom node pack that provides it, or update ComfyUI.",
        ) from None


#: LiteGraph node modes: 0 always (runs), 2 never (muted), 4 bypassed (the editor's Ctrl+B).
MODE_ALWAYS, MODE_MUTED, MODE_BYPASSED = 0, 2, 4


def api_to_ui(
    prompt: Mapping[str, Mapping[str, Any]],
    object_info: Mapping[str, Any],
    *,
    modes: Mapping[str, int] | None = None,
    groups: list[Mapping[str, Any]] | None = None,
    stages: Sequence[Stage] | None = None,
) -> dict[str, Any]:
    """An editor (UI-format) workflow for an API prompt, laid out left to right by graph depth.

    ``modes`` sets node modes (e.g. :data:`MODE_BYPASSED` for a group that is off until the user toggles
    it; :func:`ui_to_api` leaves such nodes out, as the editor does). ``groups`` are
    ``{"title": str, "nodes": [node ids], "color": "#rrggbb"}``; each becomes an editor group framing
    its nodes. ``stages`` (instead of ``groups``) lays the graph out stage by stage (:func:`stage_layout`):
    one titled group per stage with a note of what to tune, no two nodes overlapping.
    """
    modes = dict(modes or {})
    ids = {nid: int(nid) for nid in prompt}
    depth: dict[str, int] = {}

    def node_depth(nid: str, stack: tuple[str, ...] = ()) -> int:
        if nid in depth:
            return depth[nid]
        if nid in stack:
            raise ConfigError(f"the workflow has a cycle through node {nid}", where="workflow")
        ups = [v[0] for v in prompt[nid].get("inputs", {}).values() if isinstance(v, list) and len(v) == 2]
        depth[nid] = 1 + max((node_depth(str(u), (*stack, nid)) for u in ups), default=-1)
        return depth[nid]

    for nid in prompt:
        node_depth(nid)
    placed = stage_layout(prompt, object_info, stages, depth) if stages else None
    links: list[list[Any]] = []
    out_links: dict[tuple[str, int], list[int]] = {}
    nodes: list[dict[str, Any]] = []
    rows: dict[int, int] = {}
    order = sorted(prompt, key=lambda n: (depth[n], ids[n]))
    for rank, nid in enumerate(order):
        node = prompt[nid]
        cls = node["class_type"]
        schema = _schema(object_info, cls, f"node {nid}")
        inputs_ui, widgets = [], []
        for name, typ, opts in _ordered_inputs(schema):
            value = node.get("inputs", {}).get(name, opts.get("default"))
            linked = isinstance(value, list) and len(value) == 2 and str(value[0]) in prompt
            if linked:
                src, slot = str(value[0]), int(value[1])
                src_schema = _schema(object_info, prompt[src]["class_type"], f"node {src}")
                ltype = src_schema["output"][slot]
                link_id = len(links) + 1
                links.append([link_id, ids[src], slot, ids[nid], len(inputs_ui), ltype])
                out_links.setdefault((src, slot), []).append(link_id)
                entry: dict[str, Any] = {
                    "name": name,
                    "type": ltype
                    if not is_widget(typ, opts)
                    else ("COMBO" if isinstance(typ, list) else typ),
                    "link": link_id,
                }
                if is_widget(typ, opts):
                    entry["widget"] = {"name": name}
                inputs_ui.append(entry)
                if is_widget(typ, opts):
                    widgets.append(opts.get("default"))
                    if has_control_widget(name, typ, opts):
                        widgets.append("fixed")
                continue
            if is_widget(typ, opts):
                widgets.append(value)
                if has_control_widget(name, typ, opts):
                    widgets.append("fixed")
            elif section_required(schema, name):
                inputs_ui.append({"name": name, "type": typ, "link": None})
            else:
                inputs_ui.append({"name": name, "type": typ, "link": None, "shape": 7})
        col = depth[nid]
        row = rows.get(col, 0)
        rows[col] = row + 1
        pos, size = (
            placed.nodes[nid]
            if placed is not None
            else ([40 + 380 * col, 40 + 260 * row], [340, 120 + 26 * len(widgets)])
        )
        nodes.append(
            {
                "id": ids[nid],
                "type": cls,
                "pos": list(pos),
                "size": list(size),
                "flags": {},
                "order": rank,
                "mode": int(modes.get(nid, MODE_ALWAYS)),
                "inputs": inputs_ui,
                "outputs": [],
                "properties": {"Node name for S&R": cls},
                "widgets_values": widgets,
                **({"title": node["_meta"]["title"]} if node.get("_meta", {}).get("title") else {}),
            }
        )
    for n in nodes:
        nid = str(n["id"])
        schema = object_info[n["type"]]
        names = schema.get("output_name") or schema["output"]
        n["outputs"] = [
            {"name": names[i], "type": t, "links": out_links.get((nid, i), []), "slot_index": i}
            for i, t in enumerate(schema["output"])
        ]
    ui_groups = []
    by_id = {str(n["id"]): n for n in nodes}
    for k, group in enumerate(groups or []):
        members = [by_id[str(m)] for m in group["nodes"]]
        if not members:
            continue
        x0 = min(n["pos"][0] for n in members) - 20
        y0 = min(n["pos"][1] for n in members) - 60
        x1 = max(n["pos"][0] + n["size"][0] for n in members) + 20
        y1 = max(n["pos"][1] + n["size"][1] for n in members) + 20
        ui_groups.append(
            {
                "id": k + 1,
                "title": str(group["title"]),
                "bounding": [x0, y0, x1 - x0, y1 - y0],
                "color": group.get("color", "#3f789e"),
                "font_size": 24,
                "flags": {},
            }
        )
    if placed is not None:
        ui_groups = placed.groups
        first = max(ids.values(), default=0) + 1
        for k, (pos, size, text) in enumerate(placed.notes):
            nodes.append(note_node(first + k, pos, size, text, order=len(nodes)))
            ids[f"note{k}"] = first + k
    return {
        "last_node_id": max(ids.values(), default=0),
        "last_link_id": len(links),
        "nodes": sorted(nodes, key=lambda n: n["id"]),
        "links": links,
        "groups": ui_groups,
        "config": {},
        "extra": {"ds": {"scale": 0.8, "offset": [0, 0]}},
        "version": 0.4,
    }


def section_required(schema: Mapping[str, Any], name: str) -> bool:
    return name in (schema.get("input", {}).get("required") or {})


def ui_to_api(workflow: Mapping[str, Any], object_info: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """An API prompt for an editor workflow (what the editor's *Export (API)* does).

    Muted nodes are dropped; bypassed nodes pass their first matching input through; ``Reroute`` nodes
    are followed; notes are ignored. Group nodes (subgraphs) are not supported: convert them first.
    """
    nodes = {int(n["id"]): n for n in workflow.get("nodes", [])}
    links = {int(lk[0]): lk for lk in workflow.get("links", [])}

    def source(link_id: int, seen: tuple[int, ...] = ()) -> tuple[int, int] | None:
        lk = links.get(int(link_id))
        if lk is None:
            return None
        origin, slot = int(lk[1]), int(lk[2])
        node = nodes.get(origin)
        if node is None:
            return None
        if node["type"] == "Reroute" or node.get("mode") == 4:
            if origin in seen:
                raise ConfigError(f"reroute/bypass cycle at node {origin}", where="workflow")
            want = lk[5] if len(lk) > 5 else None
            for inp in node.get("inputs", []):
                if inp.get("link") is not None and (node["type"] == "Reroute" or inp.get("type") == want):
                    return source(inp["link"], (*seen, origin))
            return None
        if node.get("mode") == 2 or node["type"] in VIRTUAL_NODES:
            return None  # a PrimitiveNode's value is already in the target's widgets_values
        return origin, slot

    prompt: dict[str, dict[str, Any]] = {}
    for nid, node in sorted(nodes.items()):
        cls = node["type"]
        if cls in VIRTUAL_NODES or node.get("mode") in (2, 4):
            continue
        schema = _schema(object_info, cls, f"node {nid} ({cls})")
        linked = {
            inp["name"]: inp.get("link") for inp in node.get("inputs", []) if inp.get("link") is not None
        }
        values = list(node.get("widgets_values") or [])
        if isinstance(node.get("widgets_values"), dict):
            raise ConfigError(
                f"node {nid} ({cls}) stores widgets as a dict; re-save the workflow", where="workflow"
            )
        inputs: dict[str, Any] = {}
        for name, typ, opts in _ordered_inputs(schema):
            if is_widget(typ, opts):
                value = values.pop(0) if values else opts.get("default")
                # the editor's "control after generate" value is not an input; the runner derives seeds
                if has_control_widget(name, typ, opts) and values and values[0] in _CONTROL_VALUES:
                    values.pop(0)
                inputs[name] = value
            if name in linked:
                src = source(linked[name])
                if src is not None:
                    inputs[name] = [str(src[0]), src[1]]
                elif not is_widget(typ, opts):
                    continue
        if values and cls.startswith("FDTA"):
            raise ConfigError(
                f"node {nid} ({cls}) holds {len(values)} more widget value(s) than its inputs take: it was "
                "saved with an older layout of the node",
                where="workflow",
                fix="rebuild it from the shipped workflows (workflows/), or re-create the node in the editor.",
            )
        entry: dict[str, Any] = {"class_type": cls, "inputs": inputs}
        if node.get("title"):
            entry["_meta"] = {"title": node["title"]}
        prompt[str(nid)] = entry
    return prompt


# ------------------------------------------------------------------------------------ stage layout
#: LiteGraph's metrics (frontend 1.27): a node's title bar (above ``pos``, outside ``size``), one slot
#: row, one widget row; a group's title band. The estimates err on the large side, so the editor never
#: needs to grow a node into its neighbour.
NODE_TITLE = 30
SLOT_ROW = 22
WIDGET_ROW = 26
MULTILINE = 110
GROUP_TITLE = 50
GROUP_PAD = 24
NODE_GAP = 36
GROUP_GAP = 70
NODE_WIDTH = 380
NOTE_COLOR, NOTE_BGCOLOR = "#432", "#653"
#: Core nodes that show a picture inside themselves.
IMAGE_NODES = {"LoadImage", "PreviewImage", "SaveImage"}
#: The shape :func:`stage_layout` aims at (width / height): a screen, and a thumbnail with its header.
ASPECT = 16 / 10


@dataclass
class Stage:
    """One stage of a shipped workflow: an editor group titled ``title`` framing ``nodes`` (in reading
    order), with a note that says what to tune; ``bypassed`` stages are off until the user enables them."""

    title: str
    nodes: list[str]
    note: str = ""
    color: str = "#3f789e"
    bypassed: bool = False


@dataclass
class Placement:
    """Where :func:`stage_layout` put things: node id -> (pos, size); notes (pos, size, text); groups."""

    nodes: dict[str, tuple[list[int], list[int]]] = field(default_factory=dict)
    notes: list[tuple[list[int], list[int], str]] = field(default_factory=list)
    groups: list[dict[str, Any]] = field(default_factory=list)


def node_size(schema: Mapping[str, Any], node: Mapping[str, Any], title: str | None = None) -> list[int]:
    """A generous ``size`` for a node: slot rows (sockets and linked widgets, outputs), widget rows (the
    seed's control widget included), taller rows for multiline text, width for its title."""
    inputs = node.get("inputs", {})
    slots, widgets, extra = 0, 0, 0
    for name, typ, opts in _ordered_inputs(schema):
        linked = isinstance(inputs.get(name), list)
        if not is_widget(typ, opts) or linked:
            slots += 1
        if is_widget(typ, opts):
            widgets += 1 + int(has_control_widget(name, typ, opts))
            if opts.get("multiline"):
                long = len(str(inputs.get(name) or opts.get("default") or "").splitlines()) > 6
                extra += MULTILINE * (3 if long else 1)
    rows = max(slots, len(schema.get("output", [])))
    width = max(NODE_WIDTH, 8 * len(title or node.get("class_type", "")) + 60)
    if extra:
        width = max(width, 460)
    height = 10 + SLOT_ROW * rows + WIDGET_ROW * widgets + extra
    if node.get("class_type") in IMAGE_NODES:  # room for the picture the node shows
        height = max(height, 300)
    return [width, height]


def note_size(text: str, width: int) -> list[int]:
    """A note's size for ``text`` wrapped at ``width`` pixels (at most 8 pixels a character, 20 a line)."""
    chars = max(20, int((width - 20) / 8))
    lines = sum(max(1, -(-len(line) // chars)) for line in text.splitlines() or [""])
    return [width, 40 + 20 * lines]


def stage_layout(
    prompt: Mapping[str, Mapping[str, Any]],
    object_info: Mapping[str, Any],
    stages: Sequence[Stage],
    depth: Mapping[str, int],
) -> Placement:
    """Stages left to right, wrapping into rows, each a group: its note on top, then its nodes in
    columns by graph depth, stacked in the order the stage lists them. Nodes of no stage go last. The
    row width is the one that makes the whole graph closest to :data:`ASPECT`, so it reads on a screen and in a
    thumbnail."""
    listed = [n for st in stages for n in st.nodes]
    rest = [n for n in sorted(prompt, key=lambda n: (depth[n], int(n))) if n not in listed]
    all_stages = list(stages) + ([Stage("Other nodes", rest)] if rest else [])
    blocks = [_stage_block(prompt, object_info, st, depth) for st in all_stages]
    candidates = sorted({sum(b[0] for b in blocks[i:j]) + GROUP_GAP * (j - i - 1)
                         for i in range(len(blocks)) for j in range(i + 1, len(blocks) + 1)})  # fmt: skip
    widest = max((b[0] for b in blocks), default=0)
    best = min(
        (w for w in candidates if w >= widest),
        key=lambda w: (abs(math.log(max(_rows(blocks, w)[1], 1) / max(_rows(blocks, w)[2], 1) / ASPECT)), w),
        default=widest,
    )
    out = Placement()
    for st, (gw, gh, notes, nodes), (x, y) in zip(all_stages, blocks, _rows(blocks, best)[0], strict=True):
        out.notes += [([x + px, y + py], size, text) for (px, py), size, text in notes]
        out.nodes.update({nid: ([x + px, y + py], size) for nid, ((px, py), size) in nodes.items()})
        out.groups.append(
            {
                "id": len(out.groups) + 1,
                "title": st.title,
                "bounding": [x, y, gw, gh],
                "color": st.color,
                "font_size": 24,
                "flags": {},
            }
        )
    return out


def _stage_block(
    prompt: Mapping[str, Mapping[str, Any]],
    object_info: Mapping[str, Any],
    st: Stage,
    depth: Mapping[str, int],
) -> tuple[int, int, list, dict]:
    """One stage's group, relative to its top-left corner: ``(width, height, notes, nodes)``."""
    cols: dict[int, list[str]] = {}
    for nid in st.nodes:
        cols.setdefault(depth[nid], []).append(nid)
    columns = [col for _d, col in sorted(cols.items())]
    sizes = {
        nid: node_size(object_info[prompt[nid]["class_type"]], prompt[nid], _title(prompt[nid]))
        for nid in st.nodes
    }
    widths = [max(sizes[n][0] for n in col) for col in columns]
    inner_w = max(sum(widths) + NODE_GAP * (len(widths) - 1), 360)
    notes, nodes = [], {}
    top = GROUP_TITLE
    if st.note:
        nw, nh = note_size(st.note, inner_w)
        notes.append(((GROUP_PAD, top + NODE_TITLE), [nw, nh - NODE_TITLE], st.note))
        top += nh + NODE_GAP
    cx, bottom = GROUP_PAD, top
    for w, col in zip(widths, columns, strict=True):
        cy = top
        for nid in col:
            nodes[nid] = ((cx, cy + NODE_TITLE), [w, sizes[nid][1]])
            cy += sizes[nid][1] + NODE_TITLE + NODE_GAP
        bottom = max(bottom, cy - NODE_GAP)
        cx += w + NODE_GAP
    return inner_w + 2 * GROUP_PAD, bottom + GROUP_PAD, notes, nodes


def _rows(
    blocks: Sequence[tuple[int, int, Any, Any]], row_width: int
) -> tuple[list[tuple[int, int]], int, int]:
    """Top-left corners of ``blocks`` placed left to right, wrapping beyond ``row_width``; with the total
    width and height."""
    x, y, row_h, width, corners = 40, 40, 0, 0, []
    for w, h, _n, _d in blocks:
        if x > 40 and x - 40 + w > row_width:
            x, y, row_h = 40, y + row_h + GROUP_GAP, 0
        corners.append((x, y))
        width, row_h = max(width, x + w - 40), max(row_h, h)
        x += w + GROUP_GAP
    return corners, width, y + row_h - 40


def _title(node: Mapping[str, Any]) -> str | None:
    return (node.get("_meta") or {}).get("title")


def note_node(
    node_id: int, pos: Sequence[int], size: Sequence[int], text: str, *, order: int
) -> dict[str, Any]:
    """An editor ``Note`` (a frontend-only node: never sent to the server)."""
    return {
        "id": int(node_id),
        "type": "Note",
        "pos": list(pos),
        "size": list(size),
        "flags": {},
        "order": int(order),
        "mode": MODE_ALWAYS,
        "inputs": [],
        "outputs": [],
        "properties": {"text": ""},
        "widgets_values": [text],
        "color": NOTE_COLOR,
        "bgcolor": NOTE_BGCOLOR,
    }


def node_rects(workflow: Mapping[str, Any]) -> dict[int, tuple[float, float, float, float]]:
    """Each node's rectangle ``(x0, y0, x1, y1)`` on the canvas, its title bar included (LiteGraph draws
    the title above ``pos``); collapsed nodes are their title bar."""
    out = {}
    for n in workflow.get("nodes", []):
        x, y = n["pos"][0], n["pos"][1]
        w, h = n["size"][0], n["size"][1]
        if (n.get("flags") or {}).get("collapsed"):
            h = 0
        out[int(n["id"])] = (float(x), float(y - NODE_TITLE), float(x + w), float(y + h))
    return out
