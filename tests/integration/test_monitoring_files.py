"""Issue 17 (6): deploy/grafana-dashboard.json and deploy/prometheus-alerts.yml reference only
metrics a real notifier exposes. Every PromQL expression is parsed for its metric names, which
must all appear in a running notifier's /metrics (histograms as _bucket/_sum/_count). Where
Debian's prometheus package is installed, promtool checks the rules and a real Prometheus scrapes
the notifier, loads the rules and evaluates every dashboard expression."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import aiohttp
import psycopg
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.servers import free_port, rowcast_server, wait_until, ws_connect

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
DASHBOARD = DEPLOY / "grafana-dashboard.json"
ALERTS = DEPLOY / "prometheus-alerts.yml"
# Series Prometheus makes itself for every target, not the notifier.
PROMETHEUS_MADE = {"up"}
KEYWORDS = {
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "and",
    "or",
    "unless",
    "offset",
}


def alert_rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load(ALERTS.read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def dashboard_exprs() -> list[str]:
    dash = json.loads(DASHBOARD.read_text())
    exprs = []

    def walk(panels: list[dict[str, Any]]) -> None:
        for panel in panels:
            exprs.extend(t["expr"] for t in panel.get("targets", []))
            walk(panel.get("panels", []))

    walk(dash["panels"])
    for var in dash["templating"]["list"]:
        if var["type"] == "query":
            exprs.append(var["query"]["query"])
    return exprs


def metric_names(expr: str) -> set[str]:
    """Metric names in a PromQL expression (or Grafana's label_values(metric, label))."""
    text = re.sub(r"label_values\(\s*([A-Za-z_:][\w:]*)\s*,\s*\w+\s*\)", r"\1", expr)
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', text)  # string literals
    text = re.sub(r"\{[^}]*\}", "", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", "", text)  # ranges and subqueries
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)  # label lists
    text = re.sub(r"\$\{?\w+\}?", "", text)  # Grafana variables
    names = set()
    for match in re.finditer(r"(?<![\w.])([A-Za-z_:][\w:]*)(\s*\()?", text):
        name, call = match.group(1), match.group(2)
        if call or name in KEYWORDS:
            continue  # a function (rate, histogram_quantile, sum ...) or an operator keyword
        names.add(name)
    return names


def all_exprs() -> list[str]:
    return [rule["expr"] for rule in alert_rules()] + dashboard_exprs()


def test_the_extraction_finds_metrics_and_nothing_else() -> None:
    expr = (
        'histogram_quantile(0.99, sum by (instance, le) (rate(rowcast_event_lag_seconds_bucket{a="b"}[5m]))) '
        "> 1 and on (instance) rowcast_listening == 0 or predict_linear(x_bytes[6h], 86400) > 10 * 1e9"
    )
    assert metric_names(expr) == {"rowcast_event_lag_seconds_bucket", "rowcast_listening", "x_bytes"}
    assert metric_names("label_values(rowcast_listening, instance)") == {"rowcast_listening"}


def test_the_alerts_cover_listener_down_lag_notify_queue_and_log_growth() -> None:
    by_name = {rule["alert"]: rule for rule in alert_rules()}
    for needed in (
        "RowcastNotifierDown",
        "RowcastListenerDown",
        "RowcastLogReadsStalled",
        "RowcastDeliveryLagHigh",
        "RowcastNotifyQueueFilling",
        "RowcastLogGrowing",
        "RowcastLogNotPruned",
    ):
        rule = by_name[needed]
        assert rule["labels"]["severity"] in ("critical", "warning", "info")
        assert rule["annotations"]["summary"]
    names = set().union(*(metric_names(e) for e in all_exprs()))
    assert {
        "rowcast_listening",
        "rowcast_event_lag_seconds_bucket",
        "rowcast_pg_notification_queue_usage",
    } <= names
    assert {"rowcast_log_bytes", "rowcast_log_oldest_age_seconds", "rowcast_last_read_age_seconds"} <= names


def exposed(text: str) -> set[str]:
    return {sample.name for family in text_string_to_metric_families(text) for sample in family.samples}


async def scrape_after_traffic(db_url: str, base: str) -> str:
    async with ws_connect(base) as client:
        assert (await client.subscribe("b", "books"))["type"] == "subscribed"
        with psycopg.connect(db_url, autocommit=True) as conn:
            for i in range(16):  # the lag is sampled one change in eight
                conn.execute("INSERT INTO books (title) VALUES (%s)", (f"m{i}",))
        for _ in range(16):
            await client.until(lambda f: f["type"] == "change")
        async with aiohttp.ClientSession() as http, http.get(base + "/metrics") as resp:
            assert resp.status == 200
            return await resp.text()


async def test_every_metric_the_dashboard_and_alerts_use_is_in_a_notifiers_metrics(db_url: str) -> None:
    async with rowcast_server("notifier", db_url, {"ROWCAST_AUTH": "open"}) as server:
        text = await scrape_after_traffic(db_url, server.base)
    available = exposed(text)
    for expr in all_exprs():
        missing = metric_names(expr) - available - PROMETHEUS_MADE
        assert not missing, f"{expr!r} uses {sorted(missing)}, not in /metrics"
    # Labelled series exist before their first event: no "no data" panels on a quiet system.
    assert 'rowcast_listener_failures_total{part="reader"} 0.0' in text
    assert 'rowcast_connections{transport="sse"} 0.0' in text


# -- with Debian's prometheus package: promtool and a real Prometheus -------------------------

PROMTOOL = shutil.which("promtool")
PROMETHEUS = shutil.which("prometheus")


@pytest.mark.skipif(PROMTOOL is None, reason="promtool is not installed (apt-get install prometheus)")
def test_promtool_accepts_the_rules() -> None:
    assert PROMTOOL is not None
    result = subprocess.run(
        [PROMTOOL, "check", "rules", str(ALERTS)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(alert_rules())} rules found" in result.stdout


def grafana_to_promql(expr: str) -> str:
    """What Grafana sends for the dashboard's variables: every instance, a 1-minute rate window."""
    return expr.replace("$__rate_interval", "1m").replace('"$instance"', '".*"')


@pytest.mark.skipif(PROMETHEUS is None, reason="prometheus is not installed (apt-get install prometheus)")
@pytest.mark.timeout(120)
async def test_a_real_prometheus_scrapes_the_notifier_loads_the_rules_and_evaluates_every_panel(
    db_url: str, tmp_path: Path
) -> None:
    assert PROMETHEUS is not None
    async with rowcast_server("notifier", db_url, {"ROWCAST_AUTH": "open"}) as server:
        await scrape_after_traffic(db_url, server.base)
        port = free_port()
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(ALERTS)],
            "scrape_configs": [
                {
                    "job_name": "rowcast-notifier",
                    "static_configs": [{"targets": [f"127.0.0.1:{server.port}"]}],
                }
            ],
        }
        (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
        proc = subprocess.Popen(
            [
                PROMETHEUS,
                f"--config.file={tmp_path / 'prometheus.yml'}",
                f"--storage.tsdb.path={tmp_path / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        api = f"http://127.0.0.1:{port}/api/v1"
        try:
            async with aiohttp.ClientSession() as http:

                async def query(promql: str) -> dict[str, Any]:
                    async with http.get(api + "/query", params={"query": promql}) as resp:
                        body: dict[str, Any] = await resp.json()
                        return body

                async def scraped() -> bool:
                    try:
                        result = (await query('up{job="rowcast-notifier"}'))["data"]["result"]
                    except aiohttp.ClientError:
                        return False
                    ranges = (await query("count_over_time(rowcast_listening[1m])"))["data"]["result"]
                    return (
                        bool(result)
                        and result[0]["value"][1] == "1"
                        and bool(ranges)
                        and int(ranges[0]["value"][1]) >= 4
                    )

                await wait_until(scraped, timeout=60, interval=0.5)
                for expr in dashboard_exprs():
                    if expr.startswith("label_values("):
                        continue
                    answer = await query(grafana_to_promql(expr))
                    assert answer["status"] == "success", f"{expr}: {answer}"
                    if (
                        "predict_linear" not in expr
                        and "histogram_quantile" not in expr
                        and "rate(" not in expr
                    ):
                        assert answer["data"]["result"], f"{expr} has no data from a running notifier"

                async def rules_evaluated() -> list[dict[str, Any]] | None:
                    async with http.get(api + "/rules") as resp:
                        groups = (await resp.json())["data"]["groups"]
                    rules = [r for g in groups for r in g["rules"]]
                    return (
                        rules
                        if rules and all(r.get("lastEvaluation", "").startswith("2") for r in rules)
                        else None
                    )

                rules = await wait_until(rules_evaluated, timeout=20, interval=0.5)
                assert len(rules) == len(alert_rules())
                assert all(r["health"] == "ok" for r in rules), [
                    (r["name"], r.get("lastError")) for r in rules
                ]
                # A healthy notifier: no alert fires.
                assert [r["name"] for r in rules if r["state"] != "inactive"] == []
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
            if proc.stderr is not None:
                proc.stderr.close()
