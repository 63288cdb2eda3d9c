"""Games users write: a YAML file read into a `GameSpec`.

```yaml
name: my-game
move: {length: 8}              # or {max_length: 10, stop: "\\n"}; stop may be `eos` (the end of the player's reply)
forbid: [document_tokens]      # optional: document_tokens, newlines
player: |                      # the player's prompt, sent through the chat template; {doc:A:B} inserts the
  Continue after: {doc:0:16}   # document's tokens A..B (decoded), {move_length} the move length
judge:                         # the judge's sequence in order; each part scored or not (default false)
  - start: true                # the model's document-start token
  - doc: [0, 16]
  - move: true
    scored: true
  - text: " and then"
  - doc: [16, 80]
    scored: true
sign: 1                        # 1: maximise the scored log-likelihood; -1: minimise it
```
Optional fields: `allow` (text whose tokens are the only ones a move may use), `chat_template` (default true),
`copy_metric` (document or begin), and in `move`, `judge_sees_stop` (default false).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from frost.errors import ConfigError, read_yaml_file
from frost.games.spec import GameSpec, MoveSpec, Part, check_spec

TOP_FIELDS = ("name", "move", "forbid", "allow", "player", "judge", "sign", "chat_template", "copy_metric")
MOVE_FIELDS = ("length", "max_length", "stop", "judge_sees_stop")


def _int(value: Any, where: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise ConfigError(f"{where} must be an integer, got {value!r}")
    return value


def _move(raw: Any) -> MoveSpec:
    if not isinstance(raw, dict):
        raise ConfigError("move: must be a mapping such as {length: 8} or {max_length: 10, stop: eos}")
    for key in raw:
        if key not in MOVE_FIELDS:
            raise ConfigError(f"move: unknown field {key!r}; fields are {', '.join(MOVE_FIELDS)}")
    if ("length" in raw) == ("max_length" in raw):
        raise ConfigError("move: give exactly one of length (fixed) and max_length (with a stop)")
    if "length" in raw:
        if "stop" in raw:
            raise ConfigError("move: a fixed-length move has no stop; use max_length with stop")
        return MoveSpec(_int(raw["length"], "move.length"))
    if "stop" not in raw:
        raise ConfigError("move: max_length needs a stop (a one-token text, or eos)")
    stop = raw["stop"]
    if not isinstance(stop, str) or not stop:
        raise ConfigError(f"move.stop must be a non-empty text or eos, got {stop!r}")
    sees = raw.get("judge_sees_stop", False)
    if not isinstance(sees, bool):
        raise ConfigError(f"move.judge_sees_stop must be true or false, got {sees!r}")
    return MoveSpec(_int(raw["max_length"], "move.max_length"), stop=stop, judge_sees_stop=sees)


def _part(raw: Any, n: int) -> Part | None:
    where = f"judge[{n}]"
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: each part is a mapping such as {{doc: [0, 16]}} or {{move: true, scored: true}}")
    kinds = [k for k in raw if k != "scored"]
    if len(kinds) != 1:
        raise ConfigError(f"{where}: a part has one of start, doc, text, move (and optionally scored); got {kinds}")
    kind = kinds[0]
    scored = raw.get("scored", False)
    if not isinstance(scored, bool):
        raise ConfigError(f"{where}.scored must be true or false, got {scored!r}")
    value = raw[kind]
    if kind == "start":
        if not isinstance(value, bool):
            raise ConfigError(f"{where}.start must be true or false")
        return Part("start", scored=scored) if value else None
    if kind == "move":
        if value is not True:
            raise ConfigError(f"{where}.move must be true")
        return Part("move", scored=scored)
    if kind == "doc":
        if not isinstance(value, list) or len(value) != 2:
            raise ConfigError(f"{where}.doc must be a slice [A, B] of document tokens")
        a, b = _int(value[0], f"{where}.doc[0]"), _int(value[1], f"{where}.doc[1]")
        if a < 0 or b <= a:
            raise ConfigError(f"{where}.doc: slice [{a}, {b}] is out of order or negative; use [A, B] with 0 <= A < B")
        return Part("doc", scored=scored, span=(a, b))
    if kind == "text":
        if not isinstance(value, str) or not value:
            raise ConfigError(f"{where}.text must be non-empty text")
        return Part("text", scored=scored, text=value)
    raise ConfigError(f"{where}: unknown part {kind!r}; parts are start, doc, text, move")


def spec_from_dict(raw: Any, *, where: str = "game file") -> GameSpec:
    """A validated spec from a parsed YAML mapping."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: must be a mapping with name, move, player, judge")
    for key in raw:
        if key not in TOP_FIELDS:
            raise ConfigError(f"{where}: unknown field {key!r}; fields are {', '.join(TOP_FIELDS)}")
    for key in ("name", "move", "player", "judge"):
        if key not in raw:
            raise ConfigError(f"{where}: missing field {key!r}")
    if not isinstance(raw["name"], str) or not raw["name"]:
        raise ConfigError("name: must be a non-empty text")
    if not isinstance(raw["player"], str) or not raw["player"].strip():
        raise ConfigError("player: must be the player's prompt text")
    if not isinstance(raw["judge"], list) or not raw["judge"]:
        raise ConfigError("judge: must be a list of parts")
    parsed = [_part(item, n) for n, item in enumerate(raw["judge"])]
    parts = tuple(p for p in parsed if p is not None)
    forbid = raw.get("forbid", [])
    if not isinstance(forbid, list) or not all(isinstance(f, str) for f in forbid):
        raise ConfigError("forbid: must be a list such as [document_tokens, newlines]")
    sign = raw.get("sign", 1)
    if sign not in (1, -1) or isinstance(sign, bool):
        raise ConfigError(f"sign must be 1 or -1, got {sign!r}")
    allow = raw.get("allow")
    if allow is not None and (not isinstance(allow, str) or not allow):
        raise ConfigError("allow: must be a non-empty text whose tokens a move may use")
    chat = raw.get("chat_template", True)
    if not isinstance(chat, bool):
        raise ConfigError("chat_template must be true or false")
    spec = GameSpec(
        name=raw["name"],
        move=_move(raw["move"]),
        player=raw["player"].rstrip("\n"),
        judge=parts,
        sign=int(sign),
        forbid=tuple(forbid),
        use_chat_template=chat,
        allow=allow,
        copy_metric=raw.get("copy_metric", "document"),
    )
    return check_spec(spec)


def load_game_file(path: str | Path) -> GameSpec:
    """Read and validate a YAML game file; one line naming the field on any problem."""
    p = Path(path).expanduser()
    raw = read_yaml_file(p, "game file", missing=f"game.kind: {p} is not a file nor a built-in game")
    return spec_from_dict(raw, where=f"game file {p}")


def spec_to_yaml(spec: GameSpec) -> str:
    """A game file for a spec (built-in games included): what `frost train` saves in a run folder."""
    judge: list[dict[str, Any]] = []
    for p in spec.judge:
        item: dict[str, Any]
        if p.kind == "start":
            item = {"start": True}
        elif p.kind == "move":
            item = {"move": True}
        elif p.kind == "doc":
            item = {"doc": list(p.span)}
        else:
            item = {"text": p.text}
        if p.scored:
            item["scored"] = True
        judge.append(item)
    move: dict[str, Any] = (
        {"length": spec.move.length}
        if spec.move.stop is None
        else {"max_length": spec.move.length, "stop": spec.move.stop, "judge_sees_stop": spec.move.judge_sees_stop}
    )
    out: dict[str, Any] = {"name": spec.name, "move": move}
    if spec.forbid:
        out["forbid"] = list(spec.forbid)
    if spec.allow is not None:
        out["allow"] = spec.allow
    out |= {"player": spec.player, "judge": judge, "sign": spec.sign}
    if not spec.use_chat_template:
        out["chat_template"] = False
    if spec.copy_metric != "document":
        out["copy_metric"] = spec.copy_metric
    return yaml.safe_dump(out, sort_keys=False, allow_unicode=True)
