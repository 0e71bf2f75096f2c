// Differential test: vmdib's element resolution and hook collection against the real diskimage-builder
// (Debian's python3-diskimage-builder), on element sets from DIB's own element directory.
import { execFileSync, spawn, spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import { join } from "node:path";
import t from "tap";
import { discoverElements, loadElementSet } from "../../src/elements/discover.js";
import { addDefaultElements, ElementError, type ElementErrorKind, expandElements } from "../../src/elements/resolve.js";
import { PACKAGE_ROOT } from "../../src/paths.js";

/** Debian's python, which python3-diskimage-builder installs into (a pyenv or venv python3 on PATH may lack it). */
const PYTHON = "/usr/bin/python3";
const DIB = "/usr/lib/python3/dist-packages/diskimage_builder";
const DIB_ELEMENTS = join(DIB, "elements");
const FIXTURE_B = join(PACKAGE_ROOT, "test", "fixtures", "elements", "path-b");

function dibInstalled(): boolean {
  if (!existsSync(PYTHON) || !existsSync(DIB_ELEMENTS)) return false;
  return spawnSync(PYTHON, ["-c", "import diskimage_builder.element_dependencies"]).status === 0;
}

/** Skip (with the reason) only when the reference implementation is missing; CI installs it. */
const SKIP: string | false = dibInstalled()
  ? false
  : `python3-diskimage-builder is not installed (${DIB} importable by ${PYTHON}); apt-get install python3-diskimage-builder`;

/**
 * Runs disk-image-create's own code for a command line: arg_to_elements (base, default block device, element-info
 * --env), generate_hooks (merged hook tree, duplicate check), `dib-run-parts --list` per phase dir, and the
 * environment.d listing of dib-run-parts' source_environment.
 */
const HARNESS = `
set -e -o pipefail
export LC_ALL=C
IMAGE_ELEMENT=""
SKIP_BASE=\${SKIP_BASE:-}
_LIB=${DIB}/lib
DIB_PYTHON_EXEC=${PYTHON}
TMP_HOOKS_PATH=$(mktemp -d)/hooks
trap 'rm -rf "$(dirname "$TMP_HOOKS_PATH")"' EXIT
source "$_LIB/common-functions"
arg_to_elements "$@"
echo "@@YAML"; echo "$IMAGE_ELEMENT_YAML"
# generate_hooks exits on a duplicate: run it in a subshell and show DIB's message
if ! (generate_hooks) >"$TMP_HOOKS_PATH.log"; then grep -h "duplicated hook" "$TMP_HOOKS_PATH.log"; exit 1; fi
for d in "$TMP_HOOKS_PATH"/*.d; do
  echo "@@DIR $(basename "$d")"
  if [ "$(basename "$d")" = environment.d ]; then
    find "$d" -maxdepth 1 -xtype f | grep -E "/[0-9A-Za-z_\\.-]+$" | LANG=C sort -n | xargs -r -n1 basename
  else
    "$_LIB/dib-run-parts" --list "$d" | xargs -r -n1 basename
  fi
done
`;

interface DibResult {
  readonly ok: boolean;
  /** "Building elements: ..." — the request after disk-image-create's additions. */
  readonly requested: string[];
  /** name → path from IMAGE_ELEMENT_YAML. */
  readonly elements: Record<string, string>;
  /** *.d dir → names in run order. */
  readonly dirs: Record<string, string[]>;
  /** The exception class from element-info's traceback, or the shell's message. */
  readonly failure: string;
  readonly output: string;
}

/** Run the harness for one command line (async, so several run at once). */
function runDib(
  args: readonly string[],
  opts: { elementsPath: string; skipBase?: boolean; arch?: string },
): Promise<DibResult> {
  return new Promise((resolve, reject) => {
    const child = spawn("bash", ["-c", HARNESS, "harness", ...args], {
      env: {
        PATH: process.env.PATH,
        HOME: process.env.HOME,
        ELEMENTS_PATH: opts.elementsPath,
        ARCH: opts.arch ?? "amd64",
        SKIP_BASE: opts.skipBase ? "1" : "",
      },
    });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d: Buffer) => {
      stdout += d.toString();
    });
    child.stderr.on("data", (d: Buffer) => {
      stderr += d.toString();
    });
    child.on("error", reject);
    child.on("close", (status) => resolve(parseDib(stdout, stderr, status)));
  });
}

function parseDib(out: string, stderr: string, status: number | null): DibResult {
  const requested = /^Building elements: (.*)$/m.exec(out)?.[1]?.trim().split(/\s+/) ?? [];
  const elements: Record<string, string> = {};
  const dirs: Record<string, string[]> = {};
  let section: string[] | undefined;
  let inYaml = false;
  for (const line of out.split("\n")) {
    if (line === "@@YAML") inYaml = true;
    else if (line.startsWith("@@DIR ")) {
      inYaml = false;
      section = [];
      dirs[line.slice(6)] = section;
    } else if (inYaml && line.includes(": ")) {
      const [name, path] = line.split(": ");
      elements[name as string] = path as string;
    } else if (section && line !== "") section.push(line);
  }
  const failure =
    /diskimage_builder\.element_dependencies\.(\w+)/.exec(stderr)?.[1] ??
    /(duplicated hook)/.exec(out)?.[1] ??
    (status === 0 ? "" : `exit ${status}`);
  return { ok: status === 0, requested, elements, dirs, failure, output: `${out}\n${stderr}` };
}

/** DIB's exception class for each of our error kinds. */
const DIB_FAILURE: Record<ElementErrorKind, string> = {
  "invalid-path": "InvalidElementDir",
  unreadable: "PermissionError",
  "not-found": "MissingElementException",
  "provided-twice": "AlreadyProvidedException",
  "requested-provided": "AlreadyProvidedException",
  "no-operating-system": "MissingOSException",
  "duplicate-hook": "duplicated hook",
};

interface Case {
  readonly args: string[];
  readonly skipBase?: boolean;
  readonly arch?: string;
  /** Search path before DIB's own element dir (which disk-image-create appends itself). */
  readonly before?: string[];
  /** Expected failure kind; undefined: must succeed. */
  readonly fails?: ElementErrorKind;
}

const CASES: Case[] = [
  // OS elements of several distributions
  { args: ["debian-minimal"] },
  { args: ["ubuntu-minimal"] },
  { args: ["debian"] },
  { args: ["centos"] },
  { args: ["fedora"] },
  { args: ["rhel"] },
  { args: ["opensuse-minimal"] },
  { args: ["gentoo"] },
  // vm and block devices
  { args: ["vm", "debian-minimal"] },
  { args: ["vm", "debian-minimal"], arch: "arm64" },
  { args: ["vm", "ubuntu-minimal", "block-device-gpt"] },
  { args: ["vm", "fedora-minimal", "block-device-efi"] },
  { args: ["vm", "centos", "block-device-efi-lvm"] },
  // everyday combinations
  { args: ["vm", "debian-minimal", "devuser", "growroot", "openssh-server"] },
  { args: ["vm", "ubuntu", "cloud-init-nocloud", "growroot", "devuser"] },
  { args: ["vm", "debian-minimal", "simple-init", "dhcp-all-interfaces"] },
  { args: ["vm", "lvm"], skipBase: true },
  { args: ["vm", "debian-minimal", "zipl"], arch: "s390x" },
  { args: ["debian-minimal"], skipBase: true },
  // extra-data.d/scripts is a directory in deploy-tgtadm and ramdisk-base: merged, not a duplicate
  { args: ["ramdisk", "debian-minimal"] },
  // ELEMENTS_PATH overriding DIB's own elements (fixture path-b has base, vm, bootloader, block-device-*)
  { args: ["vm", "debian-minimal"], before: [FIXTURE_B] },
  // broken sets: DIB fails, and so must we, for the same reason
  { args: ["debian-minimal", "no-such-element"], fails: "not-found" },
  { args: ["debian-minimal", "ubuntu-minimal"], fails: "provided-twice" },
  { args: ["centos7", "fedora"], fails: "provided-twice" },
  { args: ["vm", "debian-minimal", "block-device-mbr", "block-device-gpt"], fails: "provided-twice" },
  { args: ["zipl", "bootloader", "debian-minimal"], fails: "requested-provided" },
  { args: ["debian-minimal", "operating-system"], fails: "requested-provided" },
  { args: ["vm", "devuser"], fails: "no-operating-system" },
  { args: ["growroot"], skipBase: true, fails: "no-operating-system" },
  { args: ["debian-minimal"], before: ["/nonexistent/elements"], fails: "invalid-path" },
  // modprobe (via debootstrap) and modprobe-blacklist both ship install.d/80-modprobe-blacklist
  { args: ["debian-minimal", "modprobe-blacklist"], fails: "duplicate-hook" },
];

/** Run fns with at most `limit` in flight; results in order. */
async function pool<T>(fns: (() => Promise<T>)[], limit: number): Promise<T[]> {
  const results: T[] = new Array(fns.length);
  let next = 0;
  const worker = async () => {
    for (let i = next++; i < fns.length; i = next++) results[i] = await (fns[i] as () => Promise<T>)();
  };
  await Promise.all(Array.from({ length: limit }, worker));
  return results;
}

t.test("resolution and hooks match diskimage-builder", { skip: SKIP }, async (t) => {
  const searchPathOf = (c: Case) => [...(c.before ?? []), DIB_ELEMENTS];
  const dibResults = await pool(
    CASES.map(
      (c) => () => runDib(c.args, { elementsPath: searchPathOf(c).join(":"), skipBase: c.skipBase, arch: c.arch }),
    ),
    4,
  );
  for (const [i, c] of CASES.entries()) {
    const dib = dibResults[i] as DibResult;
    const label = `${c.skipBase ? "-n " : ""}${c.arch ? `-a ${c.arch} ` : ""}${c.args.join(" ")}${c.before ? ` (ELEMENTS_PATH=${c.before.join(":")})` : ""}`;
    t.test(label, async (t) => {
      const requested = addDefaultElements(c.args, { skipBase: c.skipBase, arch: c.arch });
      if (dib.requested.length > 0) t.same(requested, dib.requested, "same additions as disk-image-create");

      let ours: Awaited<ReturnType<typeof loadElementSet>> | undefined;
      let error: unknown;
      try {
        // Like with like: DIB's search path exactly, no vmdib builtin directory.
        ours = await loadElementSet({
          requested: c.args,
          elementsPath: c.before ?? [],
          builtinDir: DIB_ELEMENTS,
          skipBase: c.skipBase,
          arch: c.arch,
        });
      } catch (err) {
        error = err;
      }

      if (c.fails !== undefined) {
        t.notOk(dib.ok, `DIB fails too (${dib.failure})`);
        t.ok(error instanceof ElementError, `vmdib fails: ${String(error)}`);
        t.equal((error as ElementError).kind, c.fails, (error as Error).message);
        t.equal(dib.failure, DIB_FAILURE[c.fails], "for the same reason");
        return;
      }

      t.ok(dib.ok, `DIB succeeds${dib.ok ? "" : `:\n${dib.output}`}`);
      if (error) throw error;
      if (!ours) return;
      t.same(Object.fromEntries(ours.elements.map((e) => [e.name, e.path])), dib.elements, "same elements, same paths");
      for (const [dir, scripts] of Object.entries(ours.hooks.phases)) {
        t.same(
          scripts.map((s) => s.name),
          dib.dirs[dir] ?? [],
          `${dir} in dib-run-parts order`,
        );
      }
      t.same(
        ours.hooks.environment.map((s) => s.name),
        dib.dirs["environment.d"] ?? [],
        "environment.d in sourcing order",
      );
    });
  }
});

t.test("the pure resolver alone matches DIB's element_dependencies for every case", { skip: SKIP }, async (t) => {
  // One python for all cases: get_elements() on exactly the list disk-image-create would pass.
  const requests = CASES.map((c) => ({
    names: addDefaultElements(c.args, { skipBase: c.skipBase, arch: c.arch }),
    path: [...(c.before ?? []), DIB_ELEMENTS].join(":"),
  }));
  const script = `
import json, sys
from diskimage_builder import element_dependencies as ed
out = []
for r in json.load(sys.stdin):
    try:
        out.append({"ok": sorted(n for n, _ in ed.get_elements(r["names"], r["path"]))})
    except Exception as e:
        out.append({"error": type(e).__name__})
print(json.dumps(out))
`;
  const dib = JSON.parse(
    execFileSync(PYTHON, ["-c", script], {
      input: JSON.stringify(requests),
      stdio: ["pipe", "pipe", "ignore"],
    }).toString(),
  ) as ({ ok: string[] } | { error: string })[];
  for (const [i, r] of requests.entries()) {
    const expected = dib[i];
    let got: { ok: string[] } | { error: string };
    try {
      const discovery = await discoverElements(r.path.split(":"));
      got = { ok: expandElements(r.names, discovery.elements, discovery.searchPath).map((e) => e.name) };
    } catch (err) {
      got = { error: err instanceof ElementError ? DIB_FAILURE[err.kind] : String(err) };
    }
    t.same(got, expected, r.names.join(" "));
  }
});
