#!/usr/bin/env python3
"""Writes charts/keyraft-operator/README.md from values.yaml, helm-docs style:
every key documented by a `# -- description` comment (continued on the
following `#` lines) becomes a row of the values table. `--check` exits 1
when the README on disk differs (the chart checks run it).

Only the block layout values.yaml uses is understood: two-space indentation,
`key: value` lines, the documented key on the line after its comment."""
import pathlib
import re
import sys


CHART = pathlib.Path(__file__).resolve().parent.parent / "charts" / "keyraft-operator"

HEADER = """# keyraft-operator

{description}

Version {version}, app version {app_version}. This file is generated from
`values.yaml` by `hack/chart-readme.py`; edit the `# --` comments there, then
run `hack/chart-readme.py`.

## Install

```sh
helm install keyraft-operator charts/keyraft-operator --namespace keyraft-system --create-namespace
```

With monitoring (needs the prometheus-operator CRDs; Grafana's dashboard
sidecar picks up the ConfigMap):

```sh
helm install keyraft-operator charts/keyraft-operator --namespace keyraft-system --create-namespace \\
  --set metrics.serviceMonitor.enabled=true \\
  --set metrics.podMonitor.enabled=true \\
  --set metrics.prometheusRule.enabled=true \\
  --set grafana.dashboards.enabled=true
```

## Values

| Key | Default | Description |
| --- | --- | --- |
"""


def chart_field(text, key):
    m = re.search(rf"^{key}:\s*\"?(.*?)\"?\s*$", text, re.M)
    return m.group(1) if m else ""


def rows(values_text):
    path = []  # (indent, key)
    doc = None
    for line in values_text.splitlines():
        stripped = line.strip()
        if stripped.startswith("# --"):
            doc = [stripped[4:].strip()]
            continue
        if stripped.startswith("#") and doc is not None:
            doc.append(stripped[1:].strip())
            continue
        m = re.match(r"^( *)([A-Za-z0-9_]+):(.*)$", line)
        if not m:
            if stripped and not stripped.startswith("#") and not stripped.startswith("-"):
                doc = None
            continue
        indent, key, rest = len(m.group(1)), m.group(2), m.group(3).strip()
        while path and path[-1][0] >= indent:
            path.pop()
        path.append((indent, key))
        if doc is not None:
            full = ".".join(k for _, k in path)
            default = rest if rest else "see values.yaml"
            yield full, default, " ".join(doc)
            doc = None


def render():
    chart = (CHART / "Chart.yaml").read_text()
    values = (CHART / "values.yaml").read_text()
    out = HEADER.format(
        description=chart_field(chart, "description"),
        version=chart_field(chart, "version"),
        app_version=chart_field(chart, "appVersion"),
    )
    for key, default, doc in rows(values):
        cells = [f"`{key}`", f"`{default}`", doc]
        out += "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |\n"
    return out


def main():
    readme = CHART / "README.md"
    text = render()
    if sys.argv[1:] == ["--check"]:
        if not readme.exists() or readme.read_text() != text:
            print(f"{readme} is out of date with values.yaml: run hack/chart-readme.py", file=sys.stderr)
            sys.exit(1)
        return
    readme.write_text(text)


if __name__ == "__main__":
    main()
