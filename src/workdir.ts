// The per-build work directory on the host, shared read-write into the helper VM: env, merged hooks, element
// links, the guest driver, and out/ for what the guest writes back. Made 0700; removed by the caller's cleanup.
import { cp, mkdir, mkdtemp, readdir, rm, stat, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { basename, isAbsolute, join } from "node:path";
import { GUEST_DIR } from "./paths.js";
import { type BuildPlan, GUEST_PATHS } from "./plan.js";
import { shellQuote } from "./shell.js";

/** Top-level entries of an element that DIB's generate_hooks does not copy into the hook tree. */
const NOT_COPIED = new Set(["tests", "__pycache__"]);

/** `export NAME='value'` with single-quote escaping: values are data, never evaluated by the guest's shell. */
export function exportLine(name: string, value: string): string {
  if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(name)) throw new Error(`not a variable name: ${JSON.stringify(name)}`);
  return `export ${name}=${shellQuote(value)}`;
}

/** The env file run-phase sources first: the plan's common environment plus the guest's fixed paths. */
export function buildEnvFile(plan: BuildPlan, overrides: Readonly<Record<string, string>> = {}): string {
  const env: Record<string, string> = {
    ...plan.environment.common,
    ...overrides,
    TMP_BUILD_DIR: GUEST_PATHS.build,
    TMP_IMAGE_DIR: GUEST_PATHS.imageDir,
    ELEMENTS_PATH: `${GUEST_PATHS.work}/elements`,
  };
  return `${Object.entries(env)
    .map(([k, v]) => exportLine(k, v))
    .join("\n")}\n`;
}

/**
 * DIB_* settings that name a file of the host (DIB_DEV_USER_AUTHORIZED_KEYS, DIB_LOCAL_IMAGE, ...) are read by
 * element scripts that run in the guest: copy each such file into the work dir and point the variable at the copy.
 * Only regular files: a setting such as DIB_MOUNTPOINTS=/ names a path in the image, not something to copy.
 */
/** The DIB_* settings whose value names a regular file of the host: [variable, path]. */
export async function hostFileSettings(env: Readonly<Record<string, string>>): Promise<[string, string][]> {
  const out: [string, string][] = [];
  for (const [name, value] of Object.entries(env)) {
    if (!name.startsWith("DIB_") || !isAbsolute(value)) continue;
    const file = await stat(value).then(
      (s) => s.isFile(),
      () => false,
    );
    if (file) out.push([name, value]);
  }
  return out;
}

async function copyHostFiles(env: Readonly<Record<string, string>>, dir: string): Promise<Record<string, string>> {
  const rewritten: Record<string, string> = {};
  for (const [name, value] of await hostFileSettings(env)) {
    await mkdir(join(dir, "host-files", name), { recursive: true });
    await cp(value, join(dir, "host-files", name, basename(value)));
    rewritten[name] = `${GUEST_PATHS.work}/host-files/${name}/${basename(value)}`;
  }
  return rewritten;
}

/**
 * Lays out a fresh work directory for `plan`: the hook tree merged like DIB's generate_hooks (earlier elements
 * first; duplicates were already rejected by hook collection), a link per element to its read-only share in
 * the guest, and a copy of guest/dib. Returns its path.
 */
export async function makeWorkDir(plan: BuildPlan, parent = tmpdir()): Promise<string> {
  const dir = await mkdtemp(join(parent, "vmdib-build-"));
  try {
    const hostFiles = await copyHostFiles(plan.environment.common, dir);
    await writeFile(join(dir, "env"), buildEnvFile(plan, hostFiles), { mode: 0o600 });
    const hooks = join(dir, "hooks");
    await mkdir(hooks);
    for (const element of plan.elements) {
      for (const entry of await readdir(element.path)) {
        if (NOT_COPIED.has(entry) || entry.startsWith(".")) continue;
        await cp(join(element.path, entry), join(hooks, entry), {
          recursive: true,
          force: false,
          errorOnExist: false,
          verbatimSymlinks: true,
          preserveTimestamps: true,
        });
      }
    }
    await mkdir(join(dir, "elements"));
    for (const element of plan.elements) await symlink(element.guestPath, join(dir, "elements", element.name));
    await cp(join(GUEST_DIR, "dib"), join(dir, "dib"), { recursive: true, verbatimSymlinks: true });
    await mkdir(join(dir, "out"));
    return dir;
  } catch (err) {
    await rm(dir, { recursive: true, force: true });
    throw err;
  }
}
