#!/usr/bin/env python3
"""Check Autobahn|Testsuite fuzzingclient results for ringcast.

Reads one or more report directories written by `wstest -m fuzzingclient` (each holding an index.json),
prints a per-group summary table of `behavior` and `behaviorClose`, and exits non-zero when:

  * any case has behavior FAILED, or behaviorClose FAILED or UNCLEAN (Autobahn's own report shows UNCLEAN as a
    failure);
  * a case listed in --cases-file (the cases the run was asked to execute) is missing from the report, i.e. the
    run stopped early (server crash, hang, connection refused);
  * a case scores worse than in the expected-results file (autobahn/expected-results.json: case id ->
    {"behavior": ..., "behaviorClose": ...}), or changes to a different result of the same rank.

Improvements over the expected file are reported but do not fail; refresh the file with --update-expected.
Without an expected file only the FAILED/UNCLEAN and completeness rules apply, and the script says so.

`python3 autobahn/check.py --self-test` checks the checker on small fake reports.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
from collections import Counter, OrderedDict

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_EXPECTED = os.path.join(HERE, "expected-results.json")

# Columns of the summary table, in order; everything else is counted as OTHER.
COLUMNS = ["OK", "NON-STRICT", "INFORMATIONAL", "UNIMPLEMENTED", "FAILED"]
SHORT = {"OK": "OK", "NON-STRICT": "NSTR", "INFORMATIONAL": "INFO", "UNIMPLEMENTED": "UNIM", "FAILED": "FAIL",
         "OTHER": "OTH"}
# Results that fail the run whatever the expected file says.
HARD_FAIL_BEHAVIOR = {"FAILED"}
HARD_FAIL_CLOSE = {"FAILED", "UNCLEAN"}
# Rank used to tell a regression from an improvement: lower is better. Unknown values rank just below FAILED.
RANK = {
    "OK": 0,
    "NON-STRICT": 1,
    "NO_CLOSE": 1,
    "WRONG CODE": 1,
    "FAILED BY CLIENT": 1,
    "INFORMATIONAL": 2,
    "UNIMPLEMENTED": 3,
    "UNCLEAN": 4,
    "FAILED": 5,
}
UNKNOWN_RANK = 4


def case_key(case_id):
    """Sort key for Autobahn case ids such as '9.1.6' (numeric, not lexicographic)."""
    return tuple(int(p) if p.isdigit() else p for p in case_id.split("."))


def group_of(case_id):
    return case_id.split(".", 1)[0]


def load_index(report_dir):
    """Return (agent, {case_id: {"behavior", "behaviorClose", ...}}) from report_dir/index.json."""
    path = os.path.join(report_dir, "index.json")
    if not os.path.isfile(path):
        raise SystemExit("error: %s not found (did wstest run to the end?)" % path)
    with open(path) as f:
        index = json.load(f)
    if not index:
        raise SystemExit("error: %s holds no agent: no case was run" % path)
    if len(index) > 1:
        raise SystemExit("error: %s holds several agents (%s); give one report dir per agent"
                         % (path, ", ".join(sorted(index))))
    agent, cases = next(iter(index.items()))
    return agent, cases


def load_expected(path):
    if not path or not os.path.isfile(path):
        return None
    with open(path) as f:
        data = json.load(f)
    cases = data.get("cases", data)
    out = {}
    for cid, v in cases.items():
        if isinstance(v, str):  # also accept the short form "1.1.1": "OK" (behavior only, close must be OK)
            v = {"behavior": v, "behaviorClose": "OK"}
        out[cid] = {"behavior": v["behavior"], "behaviorClose": v["behaviorClose"]}
    return out


def write_expected(path, cases, comment):
    # One case per line, so that a diff of the file reads as a list of changed cases.
    lines = ['  %s: {"behavior": %s, "behaviorClose": %s}'
             % (json.dumps(cid), json.dumps(cases[cid]["behavior"]), json.dumps(cases[cid]["behaviorClose"]))
             for cid in sorted(cases, key=case_key)]
    text = '{\n "_comment": %s,\n "cases": {\n%s\n }\n}\n' % (json.dumps(comment), ",\n".join(lines))
    json.loads(text)  # well-formed
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def column(value):
    return value if value in COLUMNS else "OTHER"


def summary_table(cases):
    """Return the summary table (a list of lines) of behavior and behaviorClose per group."""
    cols = COLUMNS + ["OTHER"]
    per_group = OrderedDict()
    for cid in sorted(cases, key=case_key):
        g = group_of(cid)
        b, c = per_group.setdefault(g, (Counter(), Counter()))
        b[column(cases[cid]["behavior"])] += 1
        c[column(cases[cid]["behaviorClose"])] += 1
    total_b, total_c = Counter(), Counter()
    for b, c in per_group.values():
        total_b.update(b)
        total_c.update(c)
    w = 5
    head1 = "%-6s %5s | %-*s | %-*s" % ("group", "cases", (w + 1) * len(cols) - 1, "behavior",
                                        (w + 1) * len(cols) - 1, "behaviorClose")
    head2 = "%-6s %5s | %s | %s" % ("", "", " ".join("%*s" % (w, SHORT[k]) for k in cols),
                                   " ".join("%*s" % (w, SHORT[k]) for k in cols))
    lines = [head1, head2, "-" * len(head2)]

    def row(name, b, c):
        n = sum(b.values())
        return "%-6s %5d | %s | %s" % (name, n, " ".join("%*d" % (w, b[k]) for k in cols),
                                      " ".join("%*d" % (w, c[k]) for k in cols))

    for g, (b, c) in per_group.items():
        lines.append(row(g, b, c))
    lines.append("-" * len(head2))
    lines.append(row("total", total_b, total_c))
    lines.append("OK=OK NSTR=NON-STRICT INFO=INFORMATIONAL UNIM=UNIMPLEMENTED FAIL=FAILED "
                 "OTH=other (WRONG CODE, UNCLEAN, FAILED BY CLIENT, NO_CLOSE)")
    return lines


def check_dir(report_dir, expected, wanted_cases, out):
    """Check one report dir; return (ok, cases)."""
    agent, cases = load_index(report_dir)
    ok = True
    p = lambda s="": print(s, file=out)  # noqa: E731
    p("== Autobahn results: agent %s, %d cases, %s" % (agent, len(cases), os.path.join(report_dir, "index.json")))
    for line in summary_table(cases):
        p("  " + line)

    failed = []
    for cid in sorted(cases, key=case_key):
        r = cases[cid]
        if r["behavior"] in HARD_FAIL_BEHAVIOR or r["behaviorClose"] in HARD_FAIL_CLOSE:
            failed.append(cid)
    if failed:
        ok = False
        p("FAIL: %d case(s) FAILED (behavior FAILED, or behaviorClose FAILED/UNCLEAN):" % len(failed))
        for cid in failed:
            r = cases[cid]
            p("  %-9s behavior=%-14s behaviorClose=%-14s remoteCloseCode=%s  (%s)"
              % (cid, r["behavior"], r["behaviorClose"], r.get("remoteCloseCode"),
                 os.path.join(report_dir, r.get("reportfile", "").replace(".json", ".html"))))

    if wanted_cases is not None:
        missing = [c for c in wanted_cases if c not in cases]
        if missing:
            ok = False
            p("FAIL: %d of the %d requested case(s) are missing from the report (run stopped early: server crash, "
              "hang or refused connection?): %s%s" % (len(missing), len(wanted_cases), " ".join(missing[:20]),
                                                      " ..." if len(missing) > 20 else ""))

    if expected is None:
        if ARGS_EXPECTED[0]:
            p("note: no expected-results file (%s); only the FAILED rule (and completeness) applies. "
              "Create it with scripts/autobahn.sh --update-expected." % ARGS_EXPECTED[0])
        else:
            p("note: not compared with expected results (--expected ''); only the FAILED rule (and completeness) "
              "applies.")
    else:
        regressions, improvements, new = [], [], []
        for cid in sorted(cases, key=case_key):
            if cid not in expected:
                new.append(cid)
                continue
            for field in ("behavior", "behaviorClose"):
                was, now = expected[cid][field], cases[cid][field]
                if was == now:
                    continue
                rw, rn = RANK.get(was, UNKNOWN_RANK), RANK.get(now, UNKNOWN_RANK)
                (improvements if rn < rw else regressions).append((cid, field, was, now))
        # Expected cases that this run was asked for but did not report are covered by the completeness rule;
        # when no case list was given, check the expected cases of the groups that ran.
        if wanted_cases is None:
            ran_groups = {group_of(c) for c in cases}
            gone = [c for c in expected if group_of(c) in ran_groups and c not in cases]
            if gone:
                ok = False
                p("FAIL: %d expected case(s) missing from the report: %s"
                  % (len(gone), " ".join(sorted(gone, key=case_key)[:20])))
        if regressions:
            ok = False
            p("FAIL: %d regression(s) against %s:" % (len(regressions), ARGS_EXPECTED[0]))
            for cid, field, was, now in regressions:
                p("  %-9s %-13s expected %-14s got %s" % (cid, field, was, now))
        if improvements:
            p("note: %d improvement(s) against the expected file (run scripts/autobahn.sh --update-expected "
              "to record them):" % len(improvements))
            for cid, field, was, now in improvements:
                p("  %-9s %-13s expected %-14s got %s" % (cid, field, was, now))
        if new:
            p("note: %d case(s) not in the expected file: %s%s" % (len(new), " ".join(new[:20]),
                                                                   " ..." if len(new) > 20 else ""))
        if not regressions:
            p("expected-results: no regression (%d cases compared)" % (len(cases) - len(new)))
    p("RESULT: %s for %s" % ("PASS" if ok else "FAIL", report_dir))
    return ok, cases


ARGS_EXPECTED = [DEFAULT_EXPECTED]  # for messages


def run(argv, out=sys.stdout):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("report_dirs", nargs="*", help="wstest outdir(s), each holding index.json")
    ap.add_argument("--expected", default=DEFAULT_EXPECTED, help="expected results JSON (default: %(default)s)")
    ap.add_argument("--cases-file", help="JSON list of the case ids the run was asked to execute (completeness)")
    ap.add_argument("--update-expected", action="store_true",
                    help="rewrite the expected file from these reports (all report dirs must agree; a partial run "
                         "only updates the cases it ran)")
    ap.add_argument("--self-test", action="store_true", help="test this checker on small fake reports and exit")
    args = ap.parse_args(argv)
    if args.self_test:
        return self_test()
    if not args.report_dirs:
        ap.error("give at least one report dir")
    ARGS_EXPECTED[0] = args.expected

    wanted = None
    if args.cases_file:
        with open(args.cases_file) as f:
            wanted = json.load(f)

    expected = load_expected(args.expected)
    all_ok = True
    results = []
    for d in args.report_dirs:
        ok, cases = check_dir(d, None if args.update_expected else expected, wanted, out)
        all_ok &= ok
        results.append((d, cases))

    if args.update_expected:
        merged = {}
        disagree = []
        for d, cases in results:
            for cid, r in cases.items():
                v = {"behavior": r["behavior"], "behaviorClose": r["behaviorClose"]}
                if cid in merged and merged[cid] != v:
                    disagree.append((cid, merged[cid], v, d))
                merged.setdefault(cid, v)
        if disagree:
            print("FAIL: report dirs disagree, not updating %s (drivers must behave identically):" % args.expected,
                  file=out)
            for cid, a, b, d in disagree:
                print("  %-9s %s vs %s (%s)" % (cid, a, b, d), file=out)
            return 1
        base = dict(expected or {})
        base.update(merged)
        write_expected(args.expected, base,
                       "Expected Autobahn|Testsuite results for ringcast's /echo (case id -> behavior, behaviorClose). "
                       "Written by scripts/autobahn.sh --update-expected; a result worse than this fails CI.")
        print("updated %s: %d case(s) from this run, %d in total" % (args.expected, len(merged), len(base)), file=out)
        if not all_ok:
            print("(not a pass: FAILED cases or missing cases above still fail the run)", file=out)
    return 0 if all_ok else 1


def self_test():
    """Exercise the checker on fake reports; exit 0 only if every expectation holds."""
    import io

    def fake(d, cases, agent="fake"):
        os.makedirs(d, exist_ok=True)
        idx = {agent: {cid: {"behavior": b, "behaviorClose": c, "remoteCloseCode": 1000, "duration": 1,
                             "reportfile": "fake_case_%s.json" % cid.replace(".", "_")}
                       for cid, (b, c) in cases.items()}}
        with open(os.path.join(d, "index.json"), "w") as f:
            json.dump(idx, f)

    good = {"1.1.1": ("OK", "OK"), "1.1.2": ("OK", "OK"), "6.4.1": ("NON-STRICT", "OK"),
            "7.1.6": ("INFORMATIONAL", "INFORMATIONAL"), "12.1.1": ("UNIMPLEMENTED", "UNIMPLEMENTED"),
            "10.1.1": ("OK", "OK")}
    checks = []
    with tempfile.TemporaryDirectory() as t:
        exp = os.path.join(t, "expected.json")

        def go(argv):
            buf = io.StringIO()
            rc = run(argv + ["--expected", exp], out=buf)
            return rc, buf.getvalue()

        fake(os.path.join(t, "good"), good)
        rc, txt = go([os.path.join(t, "good")])
        checks.append(("all good, no expected file -> pass", rc == 0 and "no expected-results file" in txt))
        checks.append(("summary table counts", "total      6 |     3     1     1     1     0     0" in txt))

        bad = dict(good, **{"1.1.2": ("FAILED", "OK")})
        fake(os.path.join(t, "bad"), bad)
        rc, txt = go([os.path.join(t, "bad")])
        checks.append(("behavior FAILED -> fail", rc == 1 and "1 case(s) FAILED" in txt and "1.1.2" in txt))

        badc = dict(good, **{"1.1.2": ("OK", "FAILED")})
        fake(os.path.join(t, "badclose"), badc)
        rc, _ = go([os.path.join(t, "badclose")])
        checks.append(("behaviorClose FAILED -> fail", rc == 1))

        unclean = dict(good, **{"1.1.2": ("OK", "UNCLEAN")})
        fake(os.path.join(t, "unclean"), unclean)
        rc, _ = go([os.path.join(t, "unclean")])
        checks.append(("behaviorClose UNCLEAN -> fail", rc == 1))

        cases_file = os.path.join(t, "cases.json")
        with open(cases_file, "w") as f:
            json.dump(sorted(good, key=case_key) + ["1.1.3"], f)
        rc, txt = go([os.path.join(t, "good"), "--cases-file", cases_file])
        checks.append(("requested case missing -> fail", rc == 1 and "missing from the report" in txt))

        rc, txt = go([os.path.join(t, "good"), "--update-expected"])
        checks.append(("--update-expected writes the file", rc == 0 and os.path.isfile(exp)
                       and load_expected(exp)["6.4.1"]["behavior"] == "NON-STRICT"))

        rc, txt = go([os.path.join(t, "good")])
        checks.append(("same as expected -> pass", rc == 0 and "no regression" in txt))

        worse = dict(good, **{"1.1.1": ("NON-STRICT", "OK")})
        fake(os.path.join(t, "worse"), worse)
        rc, txt = go([os.path.join(t, "worse")])
        checks.append(("OK -> NON-STRICT regression -> fail", rc == 1 and "regression" in txt and "1.1.1" in txt))

        worse_close = dict(good, **{"1.1.1": ("OK", "WRONG CODE")})
        fake(os.path.join(t, "worseclose"), worse_close)
        rc, txt = go([os.path.join(t, "worseclose")])
        checks.append(("close OK -> WRONG CODE regression -> fail", rc == 1 and "behaviorClose" in txt))

        better = dict(good, **{"6.4.1": ("OK", "OK")})
        fake(os.path.join(t, "better"), better)
        rc, txt = go([os.path.join(t, "better")])
        checks.append(("NON-STRICT -> OK improvement -> pass with note", rc == 0 and "improvement" in txt))

        fewer = {k: v for k, v in good.items() if k != "1.1.2"}
        fake(os.path.join(t, "fewer"), fewer)
        rc, txt = go([os.path.join(t, "fewer")])
        checks.append(("expected case of a run group missing -> fail", rc == 1 and "missing" in txt))

        partial = {"1.1.1": ("OK", "OK"), "1.1.2": ("OK", "OK")}
        fake(os.path.join(t, "partial"), partial)
        with open(cases_file, "w") as f:
            json.dump(["1.1.1", "1.1.2"], f)
        rc, txt = go([os.path.join(t, "partial"), "--cases-file", cases_file])
        checks.append(("restricted run (1.*) against full expected file -> pass", rc == 0))

        rc, txt = go([os.path.join(t, "good"), os.path.join(t, "better"), "--update-expected"])
        checks.append(("--update-expected refuses disagreeing drivers", rc == 1 and "disagree" in txt))

    width = max(len(n) for n, _ in checks)
    for name, passed in checks:
        print("  %-*s  %s" % (width, name, "ok" if passed else "FAILED"))
    failed = sum(1 for _, passed in checks if not passed)
    print("%d passed, %d failed" % (len(checks) - failed, failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(run(sys.argv[1:]))
