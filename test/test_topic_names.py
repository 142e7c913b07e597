"""Topic names are spelled once (`vla_pruned_ros.topic_names`); the config YAMLs repeat them for
a user to read, so every topic parameter there must equal its constant."""

from __future__ import annotations

from pathlib import Path

import yaml

from vla_pruned_ros import topic_names as names

CONFIG = Path(__file__).resolve().parents[1] / "config"
KNOWN = {v for k, v in vars(names).items() if k.isupper() and isinstance(v, str)}


def _params(doc: object) -> dict:
    out: dict = {}
    if isinstance(doc, dict):
        for key, value in doc.items():
            if key == "ros__parameters" and isinstance(value, dict):
                out.update(value)
            else:
                out.update(_params(value))
    return out


def test_every_topic_parameter_in_the_configs_is_the_constant() -> None:
    checked = 0
    for path in sorted(CONFIG.glob("*.yaml")):
        params = _params(yaml.safe_load(path.read_text()))
        for key, value in params.items():
            if not key.endswith("_topic") or value == "":
                continue
            expected = names.TOPIC_PARAMETERS.get(key)  # one name per role, on every node
            assert expected is not None, f"{path.name}: {key} has no constant in topic_names"
            assert value == expected, f"{path.name}: {key}: {value!r} != {expected!r}"
            checked += 1
    assert checked >= 30


def test_bag_player_and_bridge_name_known_topics() -> None:
    player = yaml.safe_load((CONFIG / "bag_player.yaml").read_text())
    for topic in player["vla_bag_player"]["ros__parameters"]["topics"]:
        assert topic in KNOWN, topic
    for entry in yaml.safe_load((CONFIG / "gz_bridge.yaml").read_text()):
        assert names.absolute(entry["ros_topic_name"]) in {names.absolute(t) for t in KNOWN}


def test_absolute_adds_one_leading_slash() -> None:
    assert names.absolute("camera/image_raw") == "/camera/image_raw"
    assert names.absolute("/clock") == "/clock"
