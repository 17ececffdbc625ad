#!/usr/bin/env python3
"""check_deploy.py - checks deploy/grafana/modelgate.json and
deploy/prometheus/alerts.yml against what modelgate exports (issue 16.4).

The dashboard: the fields Grafana needs to import it (title, uid,
schemaVersion, templating, panels with ids, types and grid positions inside
24 columns), every panel but a row with a datasource and targets, every
target with a refId and an expr; every metric an expr (or an alert rule, or
a template variable's query) selects is one modelgate exports: a family of
src/telemetry/telemetry.c's table (a histogram through its _bucket, _sum or
_count series); every $variable an expr uses is defined. With promtool on
PATH, every expr of the dashboard is also parsed by promtool (as a
recording rule, with its variables filled in), so a typo in PromQL fails
here rather than on someone's screen.

With --metrics FILE (a scrape of a running modelgate's /metrics, as
tests/integration/test_dashboard.c takes one), the labels are checked too:
every label a selector matches on, and every label a `by (...)` groups by,
must be one the scraped series carry (or a scrape's own instance and job).
Families that the scrape does not hold (no such event yet) are listed and
not judged.

Usage: check_deploy.py [SOURCE_DIR] [--metrics FILE]
(exit 0: all good; 1: faults listed)
"""
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

ARGS = sys.argv[1:]
SCRAPE = None
if "--metrics" in ARGS:
    i = ARGS.index("--metrics")
    SCRAPE = ARGS[i + 1]
    del ARGS[i:i + 2]
SRC = os.path.abspath(ARGS[0] if ARGS else
                      os.path.join(os.path.dirname(__file__), "..", ".."))
DASH = os.path.join(SRC, "deploy", "grafana", "modelgate.json")
ALERTS = os.path.join(SRC, "deploy", "prometheus", "alerts.yml")
# Families another change of issue 16 adds (notifications, 16.1): the alert
# rules may name them before they are in this tree's table.
PENDING = {"modelgate_notify_failed_total": "counter"}

faults = []


def fault(msg):
    faults.append(msg)


def exported():
    """name -> type, from every C source's family table entries:
    {"modelgate_x", "help" "more help", MG_COUNTER, ...}."""
    fams = {}
    entry = re.compile(
        r'\{\s*"(modelgate_[a-z0-9_]+)"\s*,\s*(?:"(?:[^"\\]|\\.)*"\s*)+,\s*'
        r'(MG_COUNTER|MG_GAUGE|MG_HISTOGRAM)')
    for root, _, files in os.walk(os.path.join(SRC, "src")):
        for f in files:
            if f.endswith(".c"):
                text = open(os.path.join(root, f), encoding="utf-8").read()
                for m in entry.finditer(text):
                    fams[m.group(1)] = m.group(2)[3:].lower()
    return fams


def series_names(fams):
    names = set()
    for n, t in fams.items():
        if t == "histogram":
            names.update({n + "_bucket", n + "_sum", n + "_count"})
        else:
            names.add(n)
    return names


# PromQL words that may stand before "(" or "{" and are not metrics.
KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right",
            "and", "or", "unless", "bool", "offset",
            # aggregations, which may take "by (...)" before their "("
            "sum", "min", "max", "avg", "group", "stddev", "stdvar", "count",
            "count_values", "bottomk", "topk", "quantile"}


def metrics_in(expr):
    """Metric names an expression selects: identifiers followed by { or [
    or standing alone, that are neither functions (followed by "(") nor
    keywords, nor inside a string or a label list."""
    e = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)          # strings
    e = re.sub(r'\{[^{}]*\}', '{}', e)                     # matchers
    e = re.sub(r'\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)',
               r'\1()', e)                                 # label lists
    e = re.sub(r'\[[^\]]*\]', '[]', e)                     # ranges
    out = []
    for m in re.finditer(r'(?<![\w$.])([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(\(?)', e):
        word, paren = m.group(1), m.group(2)
        if paren or word in KEYWORDS or re.fullmatch(r'[0-9eE.+-]+', word):
            continue
        if word in ("inf", "nan", "Inf", "NaN"):
            continue
        out.append(word)
    return out


def check_metrics(where, expr, names):
    ms = metrics_in(expr)
    if not ms:
        fault(f"{where}: selects no metric: {expr}")
    for n in ms:
        if n not in names:
            fault(f"{where}: {n} is not a metric modelgate exports")
    return ms


def check_dashboard(names):
    try:
        d = json.load(open(DASH, encoding="utf-8"))
    except (OSError, ValueError) as e:
        fault(f"{DASH}: {e}")
        return []
    for k, t in (("title", str), ("uid", str), ("schemaVersion", int),
                 ("panels", list), ("templating", dict), ("time", dict)):
        if not isinstance(d.get(k), t):
            fault(f"dashboard: {k} missing or not a {t.__name__}")
    if faults:
        return []
    variables = {v.get("name") for v in d["templating"].get("list", [])}
    for v in d["templating"].get("list", []):
        if not v.get("name") or not v.get("type"):
            fault(f"template variable without name or type: {v}")
        if v.get("type") == "query":
            q = v.get("query")
            q = q.get("query") if isinstance(q, dict) else q
            m = re.fullmatch(r'label_values\((.*),\s*(\w+)\)', q or "")
            if not m:
                fault(f"variable {v.get('name')}: query {q!r} is not label_values(...)")
            else:
                check_metrics(f"variable {v['name']}", m.group(1), names)
    exprs, ids = [], set()
    panels = list(d["panels"])
    for p in d["panels"]:
        panels.extend(p.get("panels", []))  # collapsed rows
    kinds = {"row", "timeseries", "stat", "state-timeline", "gauge",
             "bargauge", "table", "text", "heatmap"}
    for p in panels:
        where = f"panel {p.get('id')} ({p.get('title')!r})"
        if not isinstance(p.get("id"), int) or p["id"] in ids:
            fault(f"{where}: id missing, not a number or not unique")
        ids.add(p.get("id"))
        if p.get("type") not in kinds:
            fault(f"{where}: type {p.get('type')!r} unknown")
        if not p.get("title"):
            fault(f"{where}: no title")
        g = p.get("gridPos", {})
        if not all(isinstance(g.get(k), int) for k in "hwxy"):
            fault(f"{where}: gridPos needs integers h, w, x, y")
        elif g["x"] < 0 or g["w"] < 1 or g["x"] + g["w"] > 24:
            fault(f"{where}: gridPos outside the 24 columns")
        if p.get("type") in ("row", "text"):
            continue
        if not p.get("datasource"):
            fault(f"{where}: no datasource")
        ts = p.get("targets")
        if not isinstance(ts, list) or not ts:
            fault(f"{where}: no targets")
            continue
        refs = set()
        for t in ts:
            if not t.get("refId") or t["refId"] in refs:
                fault(f"{where}: target refId missing or repeated")
            refs.add(t.get("refId"))
            e = t.get("expr")
            if not isinstance(e, str) or not e.strip():
                fault(f"{where}: target {t.get('refId')} has no expr")
                continue
            for v in re.findall(r'\$\{?(\w+)', e):
                if not v.startswith("__") and v not in variables:
                    fault(f"{where}: ${v} is not a template variable")
            check_metrics(where, e, names)
            exprs.append((where, e))
    if len(exprs) < 10:
        fault(f"dashboard: only {len(exprs)} queries")
    return exprs


# Labels Prometheus adds to every scraped series.
TARGET_LABELS = {"instance", "job"}


def scraped_labels(path):
    """series name -> the label names its samples carry, from a scrape."""
    out = {}
    for ln in open(path, encoding="utf-8"):
        ln = ln.strip()
        if not ln or ln.startswith("#"):
            continue
        m = re.match(r'([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s', ln)
        if not m:
            fault(f"scrape: cannot read line {ln[:80]!r}")
            continue
        names = set(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="', m.group(3) or ""))
        out.setdefault(m.group(1), set()).update(names)
    return out


def check_labels(where, expr, scraped, missing):
    e = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    have = set(TARGET_LABELS)
    for name, matchers in re.findall(r'([a-zA-Z_:][a-zA-Z0-9_:]*)\s*\{([^{}]*)\}', e):
        if name not in scraped:
            missing.add(name)
            continue
        labels = scraped[name] | TARGET_LABELS
        have |= labels
        for lab in re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)', matchers):
            if lab not in labels:
                fault(f"{where}: {name} has no label {lab!r} (it has {sorted(scraped[name])})")
    for name in metrics_in(expr):
        if name in scraped:
            have |= scraped[name]
        else:
            missing.add(name)
    if any(n not in scraped for n in metrics_in(expr)):
        return  # the grouping may use a label of the family not scraped
    for grp in re.findall(r'\b(?:by|without)\s*\(([^)]*)\)', e):
        for lab in re.findall(r'[a-zA-Z_][a-zA-Z0-9_]*', grp):
            if lab not in have:
                fault(f"{where}: groups by {lab!r}, which none of its series carry")


def alert_exprs():
    """(alert, expr) from alerts.yml without a YAML library: `expr:` either
    inline or a `|` block."""
    out, name, lines = [], None, open(ALERTS, encoding="utf-8").read().split("\n")
    i = 0
    while i < len(lines):
        ln = lines[i]
        m = re.match(r'\s*- alert:\s*(\S+)', ln)
        if m:
            name = m.group(1)
        m = re.match(r'(\s*)expr:\s*(.*)$', ln)
        if m:
            ind, rest = len(m.group(1)), m.group(2).strip()
            if rest in ("|", ">", "|-", ">-"):
                body = []
                i += 1
                while i < len(lines) and (not lines[i].strip() or
                                          len(lines[i]) - len(lines[i].lstrip()) > ind):
                    body.append(lines[i].strip())
                    i += 1
                out.append((name, " ".join(body)))
                continue
            out.append((name, rest))
        i += 1
    return out


def promtool_parse(exprs):
    tool = shutil.which("promtool")
    if tool is None:
        print("check_deploy: promtool not on PATH: dashboard PromQL not parsed")
        return
    subst = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h"}
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "dashboard_rules.yml")
        with open(path, "w") as f:
            f.write("groups:\n  - name: dashboard\n    rules:\n")
            for i, (_, e) in enumerate(exprs):
                for k, v in subst.items():
                    e = e.replace(k, v)
                e = re.sub(r'\$\{?\w+\}?', ".*", e)
                f.write(f"      - record: dashboard:expr{i}\n        expr: {json.dumps(e)}\n")
        r = subprocess.run([tool, "check", "rules", path], capture_output=True, text=True)
        if r.returncode != 0:
            fault("promtool refuses a dashboard expr:\n" + r.stdout + r.stderr)
        else:
            print(f"check_deploy: promtool parsed the dashboard's {len(exprs)} queries")


def main():
    fams = exported()
    if len(fams) < 20:
        fault(f"only {len(fams)} metric families found under {SRC}/src")
    names = series_names(fams)
    exprs = check_dashboard(names)
    pending = series_names({k: v for k, v in PENDING.items() if k not in fams})
    for alert, e in alert_exprs():
        for n in metrics_in(e):
            if n in pending:
                print(f"check_deploy: alert {alert}: {n} is expected from "
                      "the notifications change (not in this tree yet)")
        check_metrics(f"alert {alert}", e, names | pending)
    if SCRAPE and not faults:
        scraped, missing = scraped_labels(SCRAPE), set()
        for where, e in exprs + [(f"alert {a}", e) for a, e in alert_exprs()]:
            check_labels(where, e, scraped, missing)
        if missing:
            print("check_deploy: labels not judged (not in the scrape): " +
                  ", ".join(sorted(missing)))
        print(f"check_deploy: labels checked against {len(scraped)} scraped series names")
    if not faults:
        promtool_parse(exprs)
    for f in faults:
        print("check_deploy: " + f, file=sys.stderr)
    if faults:
        return 1
    print(f"check_deploy: ok ({len(fams)} metric families, {len(exprs)} "
          "dashboard queries, alert rules)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
