"""A picture of an editor (UI-format) workflow, for the template browser's thumbnails.

Drawn with Pillow from the JSON alone (groups in their colours with their titles, nodes with title bars,
notes, links coloured by type), under a header that names the workflow, so it is deterministic for a
given Pillow and needs no browser. The graph is scaled to fit; titles keep a readable size and are cut
to their box. ComfyUI's frontend (1.27) asks for ``<stem>.jpg`` beside each custom-node template.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .workflow import NODE_TITLE

#: Picture size (the template browser shows about 350 px square cards; hover zooms in).
SIZE = (768, 768)
#: Drawn at this multiple and reduced, which smooths lines and text.
SUPERSAMPLE = 2
BACKGROUND = (30, 30, 30)
HEADER = (22, 22, 22)
NODE_BODY = (53, 53, 53)
NODE_TITLE_BAR = (40, 40, 40)
BYPASSED = (110, 60, 120)
NOTE_BODY = (102, 85, 51)
NOTE_TITLE_BAR = (68, 51, 34)
TEXT = (235, 235, 235)
MUTED = (170, 170, 170)
#: Link colours by type (LiteGraph's defaults for core types; one colour for FDTA's own sockets).
LINK_COLOURS = {
    "MODEL": (179, 157, 219),
    "CLIP": (255, 213, 0),
    "VAE": (255, 110, 110),
    "CONTROL_NET": (0, 215, 141),
    "IMAGE": (100, 181, 246),
    "STRING": (119, 221, 119),
}
FDTA_LINK = (232, 160, 90)
OTHER_LINK = (200, 200, 200)
SLOT_ROW = 22


def _hex(colour: str) -> tuple[int, int, int]:
    c = colour.lstrip("#")
    if len(c) == 3:
        c = "".join(ch * 2 for ch in c)
    return int(c[0:2], 16), int(c[2:4], 16), int(c[4:6], 16)


def _mix(a: Sequence[int], b: Sequence[int], t: float) -> tuple[int, int, int]:
    return tuple(int(round(x * (1 - t) + y * t)) for x, y in zip(a, b, strict=True))  # type: ignore[return-value]


def _font(size: int) -> Any:
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def _fit(draw: Any, text: str, font: Any, width: float) -> str:
    """``text`` cut (with '...') to ``width`` pixels; '' when not even a letter fits."""
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "...", font=font) > width:
        text = text[:-1]
    return text + "..." if text else ""


def _wrap(draw: Any, text: str, font: Any, width: float) -> list[str]:
    lines, line = [], ""
    for word in text.split():
        trial = f"{line} {word}".strip()
        if line and draw.textlength(trial, font=font) > width:
            lines.append(line)
            line = word
        else:
            line = trial
    return [*lines, line] if line else lines


def _bounds(workflow: Mapping[str, Any]) -> tuple[float, float, float, float]:
    xs0, ys0, xs1, ys1 = [], [], [], []
    for g in workflow.get("groups", []):
        x, y, w, h = g["bounding"]
        xs0.append(x), ys0.append(y), xs1.append(x + w), ys1.append(y + h)
    for n in workflow.get("nodes", []):
        x, y = n["pos"]
        w, h = n["size"]
        xs0.append(x), ys0.append(y - NODE_TITLE), xs1.append(x + w), ys1.append(y + h)
    if not xs0:
        return 0.0, 0.0, 1.0, 1.0
    return min(xs0), min(ys0), max(xs1), max(ys1)


def _bezier(p0: tuple[float, float], p3: tuple[float, float], steps: int = 24) -> list[tuple[float, float]]:
    dx = max(abs(p3[0] - p0[0]) * 0.5, 30.0)
    p1, p2 = (p0[0] + dx, p0[1]), (p3[0] - dx, p3[1])
    out = []
    for i in range(steps + 1):
        t = i / steps
        a, b, c, d = (1 - t) ** 3, 3 * (1 - t) ** 2 * t, 3 * (1 - t) * t**2, t**3
        out.append(
            (a * p0[0] + b * p1[0] + c * p2[0] + d * p3[0], a * p0[1] + b * p1[1] + c * p2[1] + d * p3[1])
        )
    return out


def _title_of(node: Mapping[str, Any]) -> str:
    if node.get("type") == "Note":
        return "Note: " + str((node.get("widgets_values") or [""])[0])
    return str(node.get("title") or node.get("type", ""))


def render_workflow(
    workflow: Mapping[str, Any], headline: str, subline: str = "", size: tuple[int, int] = SIZE
):
    """A ``PIL.Image`` (RGB) of ``workflow`` under ``headline`` and ``subline``."""
    from PIL import Image, ImageDraw

    k = SUPERSAMPLE
    W, H = size[0] * k, size[1] * k
    img = Image.new("RGB", (W, H), BACKGROUND)
    draw = ImageDraw.Draw(img)
    margin = 18 * k
    # header: what the workflow makes
    head_font, sub_font = _font(30 * k), _font(17 * k)
    sub = _wrap(draw, subline, sub_font, W - 2 * margin)[:2]
    top = margin + 40 * k + 23 * k * len(sub) + 10 * k
    draw.rectangle([0, 0, W, top - 5 * k], fill=HEADER)
    draw.text((margin, margin), _fit(draw, headline, head_font, W - 2 * margin), font=head_font, fill=TEXT)
    for i, line in enumerate(sub):
        draw.text((margin, margin + 40 * k + 23 * k * i), line, font=sub_font, fill=MUTED)
    # the graph, scaled to fit below the header and centred
    x0, y0, x1, y1 = _bounds(workflow)
    area_w, area_h = W - 2 * margin, H - top - margin
    scale = min(area_w / max(x1 - x0, 1.0), area_h / max(y1 - y0, 1.0))
    ox = margin + (area_w - (x1 - x0) * scale) / 2 - x0 * scale
    oy = top + (area_h - (y1 - y0) * scale) / 2 - y0 * scale

    def at(x: float, y: float) -> tuple[float, float]:
        return ox + x * scale, oy + y * scale

    group_font, node_font = _font(14 * k), _font(10 * k)
    for g in workflow.get("groups", []):
        gx, gy, gw, gh = g["bounding"]
        colour = _hex(str(g.get("color", "#3f789e")))
        a, b = at(gx, gy), at(gx + gw, gy + gh)
        draw.rectangle(
            [a, b], fill=_mix(BACKGROUND, colour, 0.28), outline=_mix(BACKGROUND, colour, 0.8), width=k
        )
        band = min(20 * k, (b[1] - a[1]) / 3)
        draw.rectangle([a, (b[0], a[1] + band)], fill=_mix(BACKGROUND, colour, 0.6))
    nodes = {int(n["id"]): n for n in workflow.get("nodes", [])}
    for link in workflow.get("links", []):
        _lid, src, s_slot, dst, d_slot, typ = link[:6]
        if src not in nodes or dst not in nodes:
            continue
        s, d = nodes[src], nodes[dst]
        p0 = at(s["pos"][0] + s["size"][0], s["pos"][1] + 10 + SLOT_ROW * int(s_slot))
        p3 = at(d["pos"][0], d["pos"][1] + 10 + SLOT_ROW * int(d_slot))
        colour = LINK_COLOURS.get(str(typ), FDTA_LINK if str(typ).startswith("FDTA") else OTHER_LINK)
        draw.line(_bezier(p0, p3), fill=colour, width=max(1, int(1.5 * k)))
    for n in sorted(nodes.values(), key=lambda n: int(n.get("order", 0))):
        x, y = n["pos"]
        w, h = n["size"]
        note = n.get("type") == "Note"
        a, b = at(x, y - NODE_TITLE), at(x + w, y + h)
        body = NOTE_BODY if note else (BYPASSED if n.get("mode") == 4 else NODE_BODY)
        draw.rectangle([a, b], fill=body, outline=(15, 15, 15), width=k)
        bar = at(x + w, y)[1]
        draw.rectangle([a, (b[0], bar)], fill=NOTE_TITLE_BAR if note else _mix(body, NODE_TITLE_BAR, 0.7))
        label = _fit(draw, _title_of(n), node_font, b[0] - a[0] - 6 * k)
        if label and b[1] - a[1] >= 13 * k:  # the title where it fits: in the bar, else at the top of the box
            ty = a[1] + max(0.0, (bar - a[1] - 11 * k) / 2)
            draw.text((a[0] + 3 * k, ty), label, font=node_font, fill=TEXT)
    # group titles last, on a label of the group's colour, so no node or note hides them
    for g in workflow.get("groups", []):
        gx, gy, gw, _gh = g["bounding"]
        colour = _hex(str(g.get("color", "#3f789e")))
        a, b = at(gx, gy), at(gx + gw, gy)
        label = _fit(draw, str(g.get("title", "")), group_font, b[0] - a[0] - 8 * k)
        if label:
            w = draw.textlength(label, font=group_font)
            draw.rectangle([a, (a[0] + w + 8 * k, a[1] + 18 * k)], fill=_mix(BACKGROUND, colour, 0.85))
            draw.text((a[0] + 4 * k, a[1] + 1 * k), label, font=group_font, fill=TEXT)
    return img.resize(size, Image.LANCZOS)
