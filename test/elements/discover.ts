// Tests for src/elements/discover.ts on the fixture trees in test/fixtures/elements (and an injected fs).
import { join } from "node:path";
import t from "tap";
import {
  discoverElements,
  type ElementFs,
  loadElementSet,
  parseElementList,
  readElementContents,
} from "../../src/elements/discover.js";
import { ElementError } from "../../src/elements/resolve.js";
import { PACKAGE_ROOT } from "../../src/paths.js";

const FIXTURES = join(PACKAGE_ROOT, "test", "fixtures", "elements");
const A = join(FIXTURES, "path-a");
const B = join(FIXTURES, "path-b");

async function rejection(promise: Promise<unknown>): Promise<ElementError> {
  try {
    await promise;
  } catch (err) {
    if (err instanceof ElementError) return err;
    throw err;
  }
  throw new Error("expected an ElementError");
}

t.test("parseElementList: one name per line, blanks and # comments ignored", async (t) => {
  t.same(parseElementList(undefined), []);
  t.same(parseElementList("b\n\n  a  \n# c\nd # e\nb"), ["a", "b", "d"]);
  t.same(parseElementList("operating-system"), ["operating-system"], "no trailing newline (as in DIB's own files)");
});

t.test("discoverElements reads every element dir with its deps and provides", async (t) => {
  const d = await discoverElements([A, B]);
  t.same(d.searchPath, [A, B]);
  const osA = d.elements.get("os-a");
  t.same(osA, {
    name: "os-a",
    path: join(A, "os-a"),
    searchDir: A,
    deps: ["dep-a", "dep-b"],
    provides: ["operating-system"],
  });
  t.same(d.elements.get("vm")?.deps, ["block-device", "bootloader"]);
  t.same(d.elements.get("os-b")?.provides, ["operating-system"]);
  t.notOk(d.elements.has("not-an-element"), "files are not elements");
});

t.test("an earlier search-path entry overrides a later one, with a returned warning", async (t) => {
  const d = await discoverElements([A, B]);
  t.equal(d.elements.get("shared")?.path, join(A, "shared"));
  t.same(d.warnings, [`element 'shared' at ${join(A, "shared")} overrides ${join(B, "shared")}`]);
  t.same(d.shadowed, new Map([["shared", [join(B, "shared")]]]));
  const reversed = await discoverElements([B, A]);
  t.equal(reversed.elements.get("shared")?.path, join(B, "shared"), "order decides");
});

t.test("a symlinked element takes its name and path from its target (DIB uses realpath)", async (t) => {
  const d = await discoverElements([A, B]);
  t.notOk(d.elements.has("linked"));
  t.equal(d.elements.get("real-target")?.path, join(B, "real-target"));
  t.equal(d.elements.get("real-target")?.searchDir, A, "found first through path-a's link");
  t.notOk(
    d.warnings.some((w) => w.includes("real-target")),
    "the same directory reached twice is not an override",
  );
});

t.test("a missing or non-directory search path entry is a usage error naming it", async (t) => {
  const missing = await rejection(discoverElements([A, join(FIXTURES, "nope")]));
  t.equal(missing.kind, "invalid-path");
  t.equal(missing.exitCode, 2);
  t.match(missing.message, `'${join(FIXTURES, "nope")}' does not exist`);
  t.match(missing.hint, /ELEMENTS_PATH/);
  const file = await rejection(discoverElements([join(FIXTURES, "not-a-dir")]));
  t.match(file.message, /is not a directory/);
});

t.test("fs reads are injectable", async (t) => {
  const files: Record<string, string> = { "/p/os/element-provides": "operating-system\n", "/p/x/element-deps": "os\n" };
  const dirs: Record<string, string[]> = { "/p": ["x", "os"], "/p/os": ["element-provides"], "/p/x": ["element-deps"] };
  const fake: ElementFs = {
    readdir: async (p) => dirs[p] ?? [],
    stat: async (p) => (dirs[p] ? { kind: "dir", mode: 0o755 } : files[p] ? { kind: "file", mode: 0o644 } : undefined),
    readFile: async (p) => files[p],
    realpath: async (p) => p,
  };
  const set = await loadElementSet({
    requested: ["x"],
    elementsPath: ["/p"],
    builtinDir: "/nowhere",
    skipBase: true,
    fs: fake,
  });
  t.same(
    set.elements.map((e) => [e.name, e.path, e.deps, e.provides, e.files]),
    [
      ["os", "/p/os", [], ["operating-system"], ["element-provides"]],
      ["x", "/p/x", ["os"], [], ["element-deps"]],
    ],
  );
});

t.test("loadElementSet: search path, additions, resolution, contents and hooks in one call", async (t) => {
  const set = await loadElementSet({
    requested: ["os-a", "hooks-a", "hooks-b"],
    elementsPath: ["path-a", "", B],
    cwd: FIXTURES,
    builtinDir: join(FIXTURES, "no-builtin-here"),
    skipBase: false,
  });
  t.same(set.searchPath, [A, B], "relative entries from cwd, empty entries ignored, missing builtin dir skipped");
  t.same(set.requested, ["base", "os-a", "hooks-a", "hooks-b"]);
  t.same(
    set.elements.map((e) => e.name),
    ["base", "dep-a", "dep-b", "hooks-a", "hooks-b", "os-a"],
  );
  const hooksA = set.elements.find((e) => e.name === "hooks-a");
  t.same(hooksA?.has, { packageInstalls: true, pkgMap: true, static: true, bin: true, blockDeviceDefault: true });
  t.same(set.elements.find((e) => e.name === "os-a")?.has, {
    packageInstalls: false,
    pkgMap: false,
    static: false,
    bin: false,
    blockDeviceDefault: false,
  });
  t.same(
    set.hooks.phases["install.d"]?.map((s) => `${s.element}/${s.name}`),
    ["hooks-b/7-b", "hooks-a/9-a", "hooks-a/010-a", "hooks-a/10-A", "hooks-a/10-a", "hooks-b/10-b"],
  );
  t.same(set.warnings, [], "'shared' is overridden but not used: no warning");
});

t.test("loadElementSet: the builtin directory is searched last", async (t) => {
  const set = await loadElementSet({ requested: ["os-b"], elementsPath: [], builtinDir: B, skipBase: true });
  t.same(set.searchPath, [B]);
  t.same(
    set.elements.map((e) => e.name),
    ["os-b"],
  );
  const withA = await loadElementSet({
    requested: ["shared", "os-b"],
    elementsPath: [A],
    builtinDir: B,
    skipBase: true,
  });
  t.equal(withA.elements.find((e) => e.name === "shared")?.path, join(A, "shared"), "ELEMENTS_PATH overrides builtin");
  t.same(
    withA.warnings,
    [`element 'shared' at ${join(A, "shared")} overrides ${join(B, "shared")}`],
    "warned: it is used",
  );
});

t.test("readElementContents lists subdirs (not tests/), entries after symlinks, executable bits", async (t) => {
  const d = await discoverElements([A, B]);
  const hooksA = d.elements.get("hooks-a");
  if (!hooksA) throw new Error("fixture missing");
  const [c] = await readElementContents([hooksA]);
  t.same(c?.files, ["block-device-default.yaml", "package-installs.yaml", "pkg-map"]);
  t.same(Object.keys(c?.dirs ?? {}), ["bin", "environment.d", "install.d", "root.d", "static"]);
  t.same(c?.dirs["install.d"], [
    { name: "010-a", kind: "file", executable: true },
    { name: "10-A", kind: "file", executable: true },
    { name: "10-a", kind: "file", executable: true },
    { name: "50-a-dir", kind: "dir", executable: true },
    { name: "9-a", kind: "file", executable: true },
    { name: "README", kind: "file", executable: false },
    { name: "bad.name", kind: "file", executable: true },
  ]);
});

t.test("an unreadable directory is a usage error naming it, not a crash", async (t) => {
  const denied = Object.assign(new Error("EACCES: permission denied"), { code: "EACCES" });
  const fake: ElementFs = {
    readdir: async () => {
      throw denied;
    },
    stat: async () => ({ kind: "dir", mode: 0o755 }),
    readFile: async () => undefined,
    realpath: async (p) => p,
  };
  const err = await rejection(discoverElements(["/locked"], fake));
  t.equal(err.kind, "unreadable");
  t.equal(err.exitCode, 2);
  t.equal(err.message, "cannot read /locked (EACCES)");
  t.equal(err.cause, denied);
});
