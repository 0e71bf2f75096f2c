// Tests for src/elements/hooks.ts: GNU `sort -n` emulation (against the real sort), merge, selection, duplicates.
import { execFileSync } from "node:child_process";
import { join } from "node:path";
import t from "tap";
import { discoverElements, readElementContents } from "../../src/elements/discover.js";
import { collectHooks, compareSortN } from "../../src/elements/hooks.js";
import { PHASES } from "../../src/elements/phases.js";
import { ElementError } from "../../src/elements/resolve.js";
import { PACKAGE_ROOT } from "../../src/paths.js";

const FIXTURES = join(PACKAGE_ROOT, "test", "fixtures", "elements");
const A = join(FIXTURES, "path-a");
const B = join(FIXTURES, "path-b");

/** Lines in the order `LC_ALL=C sort -n` gives them (GNU coreutils on this host). */
function gnuSortN(lines: readonly string[]): string[] {
  const out = execFileSync("sort", ["-n"], { input: `${lines.join("\n")}\n`, env: { ...process.env, LC_ALL: "C" } });
  return out.toString().split("\n").slice(0, -1);
}

async function contentsOf(...names: string[]) {
  const d = await discoverElements([A, B]);
  return readElementContents(
    names.map((n) => {
      const e = d.elements.get(n);
      if (!e) throw new Error(`fixture element ${n} missing`);
      return e;
    }),
  );
}

const NAMES = [
  "10-a",
  "9-a",
  "010-a",
  "10-A",
  "10",
  "1",
  "01",
  "001-x",
  "100-z",
  "99999999999999999999999-big",
  "99999999999999999999998-big",
  "abc",
  "ABC",
  "_x",
  "-1-neg",
  "-10-neg",
  "-0",
  "-x",
  "--5",
  "0",
  "00",
  "50-foo_bar",
  "50-foo-bar",
  "50_foo",
  "7b",
  "7",
  "1.5",
  "1.10",
  "1.50",
  "-1.5",
  ".5",
  "/env/10-a",
  "/env/9-b",
  "/env/a.bash",
];

t.test("compareSortN orders like `LC_ALL=C sort -n`", async (t) => {
  const expected = gnuSortN(NAMES);
  t.same([...NAMES].sort(compareSortN), expected);
  t.same([...NAMES].reverse().sort(compareSortN), expected, "independent of input order");
  // A few pinned by hand so the test documents the rules even where sort is different.
  t.same(["10-a", "9-a", "010-a", "10-A"].sort(compareSortN), ["9-a", "010-a", "10-A", "10-a"]);
  t.same(["/d/9-b", "/d/10-a"].sort(compareSortN), ["/d/10-a", "/d/9-b"], "paths have no leading number");
});

t.test("collectHooks merges phase dirs by name in dib-run-parts order and reports what it skips", async (t) => {
  const hooks = collectHooks(await contentsOf("hooks-a", "hooks-b", "os-a"));
  t.same(
    Object.keys(hooks.phases),
    PHASES.map((p) => p.dir),
    "every phase, in PHASES order",
  );
  t.same(
    hooks.phases["install.d"]?.map((s) => [s.element, s.name]),
    [
      ["hooks-b", "7-b"],
      ["hooks-a", "9-a"],
      ["hooks-a", "010-a"],
      ["hooks-a", "10-A"],
      ["hooks-a", "10-a"],
      ["hooks-b", "10-b"],
    ],
  );
  t.same(hooks.phases["root.d"], [
    { name: "01-root", element: "hooks-a", path: join(A, "hooks-a", "root.d", "01-root") },
  ]);
  t.same(hooks.phases["finalise.d"], []);
  t.same(
    hooks.ignored.map((i) => [i.dir, i.element, i.name, i.reason]),
    [
      ["install.d", "hooks-a", "50-a-dir", "not a regular file"],
      ["install.d", "hooks-a", "README", "not executable"],
      ["install.d", "hooks-a", "bad.name", "name does not match ^[0-9A-Za-z_-]+$"],
    ],
    ".hidden files are never considered (DIB copies with ls)",
  );
});

t.test("environment.d files: all elements, byte order of names, valid names only", async (t) => {
  const hooks = collectHooks(await contentsOf("hooks-a", "hooks-b"));
  t.same(
    hooks.environment.map((e) => `${e.element}/${e.name}`),
    ["hooks-a/10-a-env.bash", "hooks-b/10-b-env", "hooks-a/9-a-env"],
    "'bad name' skipped; 10-* before 9-* because dib-run-parts sorts whole paths",
  );
  t.equal(hooks.environment[0]?.path, join(A, "hooks-a", "environment.d", "10-a-env.bash"));
  // The same order real dib-run-parts gets: find | grep | LANG=C sort -n over the merged directory's paths.
  const paths = hooks.environment.map((e) => `/tmp/hooks/environment.d/${e.name}`);
  t.same(gnuSortN([...paths].reverse()), paths);
});

t.test("the same hook name in one phase from two elements is rejected, naming both", async (t) => {
  let err: unknown;
  try {
    collectHooks(await contentsOf("hooks-a", "hooks-dup"));
  } catch (e) {
    err = e;
  }
  if (!(err instanceof ElementError)) throw new Error("expected an ElementError");
  t.equal(err.kind, "duplicate-hook");
  t.equal(err.exitCode, 2);
  t.equal(err.message, "duplicate hook 'install.d/10-a' in elements 'hooks-a' and 'hooks-dup'");
  t.same(err.context, [join(A, "hooks-a", "install.d", "10-a"), join(A, "hooks-dup", "install.d", "10-a")]);
  t.match(err.hint, /rename/);
});

t.test("duplicates in environment.d are rejected too; same-named directories merge; tests/ is ignored", async (t) => {
  let err: unknown;
  try {
    collectHooks(await contentsOf("env-dup", "hooks-a"));
  } catch (e) {
    err = e;
  }
  t.ok(err instanceof ElementError);
  t.match((err as Error).message, "duplicate hook 'environment.d/10-a-env.bash' in elements 'env-dup' and 'hooks-a'");
  // hooks-a and hooks-b both have install.d/50-a-dir/, static/etc/ and tests/10-dup: no error.
  t.doesNotThrow(async () => collectHooks(await contentsOf("hooks-a", "hooks-b")));
});
