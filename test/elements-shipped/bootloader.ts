// Tests bootloader's install.d/80-bootloader-packages on the host without a VM: which grub packages it installs into
// the tree (so they land in the tree cache) for each block-device layout, and that it leaves an unknown layout to
// finalise.d, as DIB does. install-packages and debconf-set-selections are stand-ins on PATH that record their calls.
import { spawnSync } from "node:child_process";
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import t from "tap";
import { BUILTIN_ELEMENTS_DIR } from "../../src/paths.js";

const HOOK = join(BUILTIN_ELEMENTS_DIR, "bootloader", "install.d", "80-bootloader-packages");

/** Runs the hook with recording stand-ins; returns its exit code, output and the recorded calls. */
function runHook(env: Record<string, string>) {
  const dir = mkdtempSync(join(tmpdir(), "vmdib-bootloader-"));
  try {
    const calls = join(dir, "calls");
    writeFileSync(calls, "");
    for (const tool of ["install-packages", "debconf-set-selections"]) {
      const path = join(dir, tool);
      writeFileSync(path, `#!/bin/sh\necho "${tool} $*" >>'${calls}'\ncat >/dev/null\n`);
      chmodSync(path, 0o755);
    }
    const r = spawnSync("bash", [HOOK], {
      encoding: "utf8",
      env: { PATH: `${dir}:${process.env.PATH ?? ""}`, ...env },
      stdio: ["ignore", "pipe", "pipe"],
    });
    return { code: r.status, stdout: r.stdout, stderr: r.stderr, calls: readFileSync(calls, "utf8") };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

t.test("a known layout installs its grub packages in install.d, with the debconf answers first", async (t) => {
  for (const [layout, pkg] of [
    ["mbr", "grub-pc"],
    ["gpt", "grub-pc"],
    ["efi", "grub-efi-amd64"],
  ] as const) {
    const r = runHook({ DIB_BLOCK_DEVICE: layout, ARCH: "amd64" });
    t.equal(r.code, 0, r.stderr);
    t.equal(r.calls, `debconf-set-selections \ninstall-packages -m bootloader ${pkg}\n`, layout);
  }
});

t.test("an unknown layout or an unsupported arch installs nothing and leaves it to finalise.d", async (t) => {
  const cases: Record<string, string>[] = [
    { ARCH: "amd64" },
    { DIB_BLOCK_DEVICE: "efi", ARCH: "arm64" },
    { DIB_BLOCK_DEVICE: "lvm" },
  ];
  for (const env of cases) {
    const r = runHook(env);
    t.equal(r.code, 0, r.stderr);
    t.equal(r.calls, "", JSON.stringify(env));
    t.match(r.stdout, /not known here; finalise.d installs grub/);
  }
});
