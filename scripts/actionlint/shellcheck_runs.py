"""Runs shellcheck on every `run:` script of the workflow files given, as actionlint does when
it finds shellcheck. `${{ ... }}` expressions are replaced by a placeholder word first (the
runner substitutes them before bash sees the script). Exit 0: clean; 1: findings; 2: error."""

import re
import subprocess
import sys
import tempfile

import yaml


def scripts(workflow):
    """Yields (job id, step index or name, script) for each `run:` step run by bash."""
    default_shell = ((workflow.get("defaults") or {}).get("run") or {}).get("shell", "bash")
    for job_id, job in (workflow.get("jobs") or {}).items():
        shell = ((job.get("defaults") or {}).get("run") or {}).get("shell", default_shell)
        for n, step in enumerate(job.get("steps") or []):
            if "run" in step and step.get("shell", shell).split()[0] == "bash":
                yield job_id, step.get("name", f"step {n + 1}"), step["run"]


def main(files):
    findings = 0
    for path in files:
        with open(path, encoding="utf-8") as f:
            workflow = yaml.safe_load(f)
        for job_id, step, script in scripts(workflow):
            body = re.sub(r"\$\{\{.*?\}\}", "GITHUB_EXPRESSION", script, flags=re.S)
            with tempfile.NamedTemporaryFile("w", suffix=".sh") as tmp:
                # GitHub runs `bash --noprofile --norc -eo pipefail {0}`.
                tmp.write("#!/usr/bin/env bash\nset -eo pipefail\n" + body)
                tmp.flush()
                done = subprocess.run(["shellcheck", "-s", "bash", "-f", "gcc", tmp.name], capture_output=True, text=True)
            if done.returncode not in (0, 1):
                print(f"shellcheck failed on {path} {job_id}/{step}: {done.stderr.strip()}", file=sys.stderr)
                return 2
            for line in done.stdout.splitlines():
                # file:line:col: level: message; the script starts on line 3 of the temporary file.
                m = re.match(r"^[^:]+:(\d+):(\d+): (.*)$", line)
                where = f"line {int(m.group(1)) - 2}:{m.group(2)}: {m.group(3)}" if m else line
                print(f"{path}: job {job_id}, step {step!r}, run {where}")
                findings += 1
        print(f"shellcheck: {path}: {findings} finding(s) so far", file=sys.stderr)
    return 1 if findings else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
