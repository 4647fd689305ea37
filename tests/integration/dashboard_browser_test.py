#!/usr/bin/python3
"""The dashboard in a real browser: headless Chromium (Debian's chromium + chromium-driver, driven
by python3-selenium) loads http://<engine>/ against a running engine fed by `inferscope simulate`.

Usage: dashboard_browser_test.py INFERSCOPE_BINARY ARTIFACT_DIR

Checks that the fleet table and the ttft chart show the simulated instances, that an alert
injected through the Python client appears, that an instance whose name is HTML shows as text (no
element is created from it), that the drill-down charts and the alerts page render, and that the
page logs no error. Saves ARTIFACT_DIR/dashboard.png (the fleet view) and dashboard-instance.png
(the drill-down) and prints their paths. Exit code 77 (ctest SKIP_RETURN_CODE) when Chromium,
chromium-driver or Selenium is missing.
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
HERE = os.path.dirname(os.path.abspath(__file__))
SIM_INSTANCES = ["vllm-0", "sglang-1", "tgi-2", "vllm-3"]
HTML_NAME = "evil<img src=x onerror=window.__pwned=1>"
DEADLINE_S = 45  # for each wait; the whole test takes ~20-30 s

TOPOLOGY = """name: dashboard-browser
state:
  path: {state}
query:
  listen: 127.0.0.1:0
sources:
  - name: ingest
    type: zmq
    options:
      endpoint: tcp://127.0.0.1:*
operators:
  - name: windows
    type: window_aggregate
    inputs: [ingest]
    options: {{pane: 1s, out_of_orderness: 300ms, idle_timeout: 1s}}
  - name: rules
    type: threshold_rules
    inputs: [windows]
    options:
      rules:
        - name: injected_ttft
          metric: ttft_ms
          stat: p95
          op: ">"
          levels: {{warning: 20000, critical: 40000}}
          keep_firing_for: 10m
          min_count: 5
sinks:
  - name: state
    type: rocksdb_state
    inputs: [windows]
  - name: alert_store
    type: rocksdb_alerts
    inputs: [rules]
"""


def skip(message):
    print("SKIP: " + message)
    sys.exit(77)


def wait_for(what, predicate, deadline_s=DEADLINE_S):
    """Polls `predicate` until it returns a true value (returned) or the deadline passes."""
    end = time.monotonic() + deadline_s
    last_error = None
    while time.monotonic() < end:
        try:
            value = predicate()
            if value:
                return value
        except Exception as e:  # noqa: BLE001 - reported when the deadline passes
            last_error = e
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}" +
                         (f" (last error: {last_error})" if last_error else ""))


def get_json(url):
    with urllib.request.urlopen(url, timeout=5) as res:
        return json.loads(res.read())


def main():
    if len(sys.argv) != 3:
        print(__doc__)
        return 2
    binary, artifacts = sys.argv[1], sys.argv[2]
    for path, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not os.access(path, os.X_OK):
            skip(f"{path} not found: install Debian's {package} "
                 "(scripts/install-deps.sh --browser, run by `make test`)")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
        from selenium.webdriver.common.by import By
    except ImportError:
        skip("python3-selenium is missing (scripts/install-deps.sh --browser, run by `make test`)")
    sys.path.insert(0, os.path.join(HERE, "..", "..", "clients", "python"))
    from inferscope_client import Publisher

    os.makedirs(artifacts, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix="inferscope-dashboard-")
    procs = []
    driver = None
    try:
        topology = os.path.join(tmp, "topology.yaml")
        with open(topology, "w") as f:
            f.write(TOPOLOGY.format(state=os.path.join(tmp, "state")))
        ready = os.path.join(tmp, "ready.json")
        engine = subprocess.Popen([binary, "run", "--topology", topology, "--ready-file", ready],
                                  stdout=open(os.path.join(tmp, "engine.log"), "w"),
                                  stderr=subprocess.STDOUT)
        procs.append(engine)
        info = wait_for("the engine's ready file",
                        lambda: os.path.exists(ready) and json.load(open(ready)))
        base = info["http"] if info["http"].startswith("http") else "http://" + info["http"]
        ingest = info["endpoints"]["ingest"]
        print("engine at " + base + ", ingest " + ingest)

        sim = subprocess.Popen([binary, "simulate", "--endpoint", ingest, "--instances", "4",
                                "--models", "1", "--rate", "16", "--duration", "60",
                                "--seed", "7"],
                               stdout=open(os.path.join(tmp, "simulate.log"), "w"),
                               stderr=subprocess.STDOUT)
        procs.append(sim)
        # The simulated instances reach the store (their model: whatever the simulator names it).
        instances = wait_for("the simulated instances in /v1/instances", lambda: (
            lambda ids: ids if all(i in ids for i in SIM_INSTANCES) else None)(
                [i["id"] for i in get_json(base + "/v1/instances")["instances"]]))
        model = next(i for i in get_json(base + "/v1/instances")["instances"]
                     if i["id"] == "vllm-0")["models"][0]["name"]
        # DASHBOARD_TEST_HISTORY_S=N (for a screenshot with some history, not for the test): wait
        # until N seconds of event time are stored first.
        history_s = float(os.environ.get("DASHBOARD_TEST_HISTORY_S", "0"))
        if history_s > 0:
            first = min(i["first_seen"] for i in get_json(base + "/v1/instances")["instances"])
            wait_for(f"{history_s} s of history", lambda: max(
                i["last_seen"] for i in get_json(base + "/v1/instances")["instances"]) >=
                first + history_s * 1000, deadline_s=history_s + 30)

        # The injected alert: a burst of very slow first tokens on vllm-0, and one request from an
        # instance whose name is HTML.
        with Publisher(ingest, "dashboard-injector", batch_size=64) as pub:
            for _ in range(40):
                pub.request("vllm-0", model, e2e_ms=60000.0, ttft_ms=50000.0, tpot_ms=20.0,
                            prompt_tokens=100, output_tokens=10)
            for _ in range(3):
                pub.request(HTML_NAME, model, e2e_ms=900.0, ttft_ms=90.0, tpot_ms=12.0,
                            prompt_tokens=100, output_tokens=10)
            pub.flush()
        wait_for("the injected alert to fire", lambda: any(
            a["rule"] == "injected_ttft" and a["instance"] == "vllm-0"
            for a in get_json(base + "/v1/alerts?state=firing")["alerts"]))
        print("simulated instances " + ", ".join(instances) + "; injected alert firing")

        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                     "--no-first-run", "--disable-background-networking",
                     "--disable-component-update", "--disable-sync",
                     "--disable-dev-shm-usage", "--window-size=1400,1100",
                     "--user-data-dir=" + os.path.join(tmp, "chromium-profile")):
            options.add_argument(flag)
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
        driver.set_page_load_timeout(30)
        driver.get(base + "/")

        def table_texts(table_id):
            return [[td.text for td in tr.find_elements(By.TAG_NAME, "td")]
                    for tr in driver.find_elements(By.CSS_SELECTOR, f"#{table_id} tbody tr")]

        # Fleet table: a row per simulated instance, with numbers in its quantile columns.
        def fleet_ready():
            rows = {r[0]: r for r in table_texts("fleet-table") if len(r) == 12}
            if not all(i in rows for i in SIM_INSTANCES):
                return None
            for i in SIM_INSTANCES:
                ttft_p95 = rows[i][5]
                float(ttft_p95)  # raises (and the wait goes on) until a number shows
            return rows
        rows = wait_for("the fleet table to list the simulated instances", fleet_ready)
        assert HTML_NAME in rows, f"the HTML-named instance is missing: {sorted(rows)}"
        assert not driver.find_elements(By.CSS_SELECTOR, "#fleet-table img"), \
            "an instance name became an <img> element: names are not escaped"
        assert driver.execute_script("return window.__pwned === undefined"), "injected script ran"

        # The ttft chart: a uPlot canvas whose legend names the simulated instances.
        def chart_ready():
            if not driver.find_elements(By.CSS_SELECTOR, "#fleet-chart canvas"):
                return None
            legend = [e.text for e in driver.find_elements(
                By.CSS_SELECTOR, "#fleet-chart .u-legend .u-series th")]
            return legend if all(any(i in t for t in legend) for i in SIM_INSTANCES) else None
        legend = wait_for("the fleet chart's legend to name the instances", chart_ready)

        # The injected alert among the firing alerts.
        wait_for("the injected alert on the fleet page", lambda: any(
            "injected_ttft" in r and "vllm-0" in r for r in table_texts("fleet-alerts")))
        driver.execute_script("window.scrollTo(0, 0)")
        shot = os.path.join(os.path.abspath(artifacts), "dashboard.png")
        driver.save_screenshot(shot)
        print("fleet rows: " + "; ".join(f"{k}: ttft p95 {v[5]}" for k, v in sorted(rows.items())))
        print("chart legend: " + ", ".join(legend))

        # Drill-down: four charts with p50/p95/p99 and rate series.
        driver.get(base + "/#/instance/vllm-0")
        wait_for("the drill-down charts", lambda: len(driver.find_elements(
            By.CSS_SELECTOR, "#view-instance .chart canvas")) == 4)
        legend = [e.text for e in driver.find_elements(
            By.CSS_SELECTOR, "#chart-ttft .u-legend .u-series th")]
        assert any("p99" in t for t in legend), legend
        assert driver.find_element(By.ID, "instance-name").text == "vllm-0"
        shot2 = os.path.join(os.path.abspath(artifacts), "dashboard-instance.png")
        driver.save_screenshot(shot2)

        # The alerts page lists it too.
        driver.get(base + "/#/alerts")
        wait_for("the alerts page", lambda: any(
            "injected_ttft" in r and "firing" in r for r in table_texts("alerts-table")))

        errors = [e for e in driver.get_log("browser") if e.get("level") == "SEVERE"]
        assert not errors, f"the page logged errors: {errors}"
        print("screenshot: " + shot)
        print("screenshot: " + shot2)
        print("PASS")
        return 0
    finally:
        if driver is not None:
            driver.quit()
        for p in reversed(procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    p.kill()
        if os.environ.get("KEEP_TMP"):
            print("kept " + tmp)
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
