"""The README stays true: its quick start and its node parameter table."""
import re
from pathlib import Path

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def test_quick_start_is_exactly_the_two_make_commands():
    quick_start = README.split("## Quick start", 1)[1].split("##", 1)[0]
    block = re.search(r"```bash\n(.*?)```", quick_start, re.S).group(1)
    commands = [line.split("#")[0].strip() for line in block.splitlines() if line.strip()]
    assert commands == ["make demo", "make test"]


def test_every_node_parameter_is_in_the_readme_table():
    from adu_perception.ros_node.classifier_node import PARAMETERS

    documented = set(re.findall(r"^\| `([a-z_]+)` \|", README, re.M))
    declared = {spec.name for spec in PARAMETERS}
    assert declared <= documented, f"undocumented node parameters: {sorted(declared - documented)}"
