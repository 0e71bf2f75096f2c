// Tests the package-installs and pkg-map elements' Python tools on fixtures, with the host's python3 (+ yaml).
import { spawnSync } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import t from "tap";
import { BUILTIN_ELEMENTS_DIR } from "../../src/paths.js";

const SQUASH = join(BUILTIN_ELEMENTS_DIR, "package-installs", "bin", "package-installs-squash");
const V2 = join(BUILTIN_ELEMENTS_DIR, "package-installs", "bin", "package-installs-v2");
const PKG_MAP_BIN = join(BUILTIN_ELEMENTS_DIR, "pkg-map", "bin");
// The system interpreter: python3-yaml is a Debian package, a python3 earlier on PATH (pyenv) may lack it.
const PYTHON = existsSync("/usr/bin/python3") ? "/usr/bin/python3" : "python3";

type Squashed = Record<string, Record<string, [string, string][]>>;

function tempDir(t: { teardown(fn: () => void): void }): string {
  const dir = mkdtempSync(join(tmpdir(), "vmdib-pkgs-"));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

function element(root: string, name: string, files: Record<string, string>): void {
  mkdirSync(join(root, name), { recursive: true });
  for (const [file, text] of Object.entries(files)) writeFileSync(join(root, name, file), text);
}

function run(argv: string[], env: NodeJS.ProcessEnv) {
  const r = spawnSync(PYTHON, argv, { encoding: "utf8", env: { PATH: process.env.PATH, ...env } });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

function squash(
  t: { teardown(fn: () => void): void },
  elements: string,
  path: string[],
  env: NodeJS.ProcessEnv,
): { code: number | null; data: Squashed; stderr: string } {
  const out = join(tempDir(t), "out.json");
  const r = run([SQUASH, "--elements", elements, "--path", path.join(":"), out], env);
  return { code: r.code, data: r.code === 0 ? JSON.parse(readFileSync(out, "utf8")) : {}, stderr: r.stderr };
}

const BASE_ENV = { ARCH: "amd64", DIB_PYTHON_VERSION: "3", DIB_RELEASE: "bookworm" };

t.test("squash: phases, uninstall, build-only, arch, python version, installtype and when", async (t) => {
  const root = tempDir(t);
  element(root, "a", {
    "package-installs.yaml": `
plain:
early:
  phase: pre-install.d
gone:
  uninstall: true
tool:
  build-only: true
amd:
  arch: amd64, i386
notamd:
  not-arch: amd64
py2:
  dib_python_version: 2
py3:
  dib_python_version: 3
src:
  installtype: source
pkg:
  installtype: package
listed:
  - when: DIB_X = yes
    phase: post-install.d
  - when: [DIB_X != yes, DIB_RELEASE = bookworm]
`,
  });
  element(root, "b", { "package-installs.json": '{"from-json": null}' });
  const r = squash(t, "a b", [root], { ...BASE_ENV, DIB_X: "no" });
  t.equal(r.code, 0, r.stderr);
  t.same(r.data, {
    "install.d": {
      install: [
        ["plain", "a"],
        ["tool", "a"],
        ["amd", "a"],
        ["py3", "a"],
        ["src", "a"],
        ["listed", "a"],
        ["from-json", "b"],
      ],
      uninstall: [
        ["gone", "a"],
        ["tool", "a"],
      ],
    },
    "pre-install.d": { install: [["early", "a"]] },
  });

  const typed = squash(t, "a", [root], { ...BASE_ENV, DIB_X: "yes", DIB_INSTALLTYPE_a: "package" });
  const install = typed.data["install.d"]?.install?.map(([p]) => p) ?? [];
  t.ok(install.includes("pkg") && !install.includes("src"), "DIB_INSTALLTYPE_<element> picks installtype: package");
  t.same(typed.data["post-install.d"]?.install, [["listed", "a"]], "the first when: entry holds with DIB_X=yes");
});

t.test("squash: the first element directory on the path wins; unknown elements are skipped", async (t) => {
  const first = tempDir(t);
  const second = tempDir(t);
  element(first, "e", { "package-installs.yaml": "winner:\n" });
  element(second, "e", { "package-installs.yaml": "loser:\n" });
  const r = squash(t, "e missing", [first, second], BASE_ENV);
  t.equal(r.code, 0, r.stderr);
  t.same(r.data, { "install.d": { install: [["winner", "e"]] } });
});

t.test("squash: errors for an unset when: variable and for arch with not-arch", async (t) => {
  const root = tempDir(t);
  element(root, "w", { "package-installs.yaml": "p:\n  when: DIB_UNSET_VAR = x\n" });
  const unset = squash(t, "w", [root], BASE_ENV);
  t.equal(unset.code, 1);
  t.match(unset.stderr, /DIB_UNSET_VAR/);
  element(root, "x", { "package-installs.yaml": "p:\n  arch: amd64\n  not-arch: i386\n" });
  const both = squash(t, "x", [root], BASE_ENV);
  t.equal(both.code, 1);
  t.match(both.stderr, /arch and not-arch/);
});

const MAP = JSON.stringify({
  default: { generic: "generic-default", dropped: "" },
  family: { debian: { generic: "generic-deb", multi: "one two" } },
  distro: { ubuntu: { generic: "generic-ubuntu" } },
  release: { debian: { bookworm: { multi: "one-bookworm" } } },
});

t.test("pkg-map: default < family < distro < release; empty maps drop; --missing-ok passes through", async (t) => {
  const dir = tempDir(t);
  const map = join(dir, "map.json");
  writeFileSync(map, MAP);
  const pkgMap = join(PKG_MAP_BIN, "pkg-map");
  const lines = (argv: string[]) =>
    run([pkgMap, "--pkg-map", map, ...argv], {})
      .stdout.trim()
      .split("\n");
  t.same(lines(["--distro", "debian", "--release", "bullseye", "generic", "multi", "dropped"]), [
    "generic-deb",
    "one",
    "two",
  ]);
  t.same(lines(["--distro", "debian", "--release", "bookworm", "multi"]), ["one-bookworm"]);
  t.same(lines(["--distro", "ubuntu", "--prefix", "-", "generic"]), ["-generic-ubuntu"]);
  t.same(lines(["--distro", "fedora", "--missing-ok", "other"]), ["other"]);
  const missing = run([pkgMap, "--pkg-map", map, "--distro", "debian", "nope"], {});
  t.equal(missing.code, 1);
  const noFile = run([pkgMap, "--element", "nothing", "--distro", "debian", "x"], { VMDIB_PKG_MAP_DIR: dir });
  t.equal(noFile.code, 2, "no map file for the element: exit 2, as DIB's");
});

t.test("package-installs-v2 maps per element and prints one install-packages call (--noop)", async (t) => {
  const dir = tempDir(t);
  writeFileSync(join(dir, "a"), MAP);
  const json = join(dir, "packages.json");
  writeFileSync(
    json,
    JSON.stringify({
      "install.d": {
        install: [
          ["generic", "a"],
          ["multi", "a"],
          ["plain", "b"],
          ["generic", "a"],
        ],
        uninstall: [["tool", "b"]],
      },
    }),
  );
  const env = { PATH: `${PKG_MAP_BIN}:${process.env.PATH}`, VMDIB_PKG_MAP_DIR: dir, DISTRO_NAME: "debian" };
  const install = run([V2, "--phase", "install.d", "--noop", json], env);
  t.equal(install.code, 0, install.stderr);
  t.match(install.stdout, /^install-packages generic-deb one two plain$/m);
  const remove = run([V2, "--phase", "install.d", "--uninstall", "-n", json], env);
  t.match(remove.stdout, /^install-packages -e tool$/m);
  const none = run([V2, "--phase", "post-install.d", "-n", json], env);
  t.equal(none.code, 0);
  t.match(none.stdout, /Nothing to install/);
});
