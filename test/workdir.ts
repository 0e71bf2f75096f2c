import { execFileSync } from "node:child_process";
import { chmod, mkdir, mkdtemp, readFile, readlink, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import t from "tap";
import type { BuildPlan } from "../src/plan.js";
import { buildEnvFile, exportLine, makeWorkDir } from "../src/workdir.js";

t.test("exportLine quotes values so the guest shell never evaluates them", async (t) => {
  const hostile = "$(touch /tmp/pwned) `id`; echo 'x'\nnext";
  const line = exportLine("DIB_X", hostile);
  const out = execFileSync("bash", ["-c", `${line}\nprintf %s "$DIB_X"`]).toString();
  t.equal(out, hostile);
  t.throws(() => exportLine("BAD-NAME", "x"));
});

t.test("makeWorkDir merges hooks, links elements to their guest shares, copies the driver", async (t) => {
  const root = await mkdtemp(join(tmpdir(), "vmdib-wd-test-"));
  t.teardown(() => rm(root, { recursive: true, force: true }));
  const a = join(root, "els", "a");
  const b = join(root, "els", "b");
  await mkdir(join(a, "install.d"), { recursive: true });
  await mkdir(join(b, "install.d"), { recursive: true });
  await mkdir(join(a, "tests"), { recursive: true });
  await writeFile(join(a, "install.d", "10-a"), "#!/bin/sh\n");
  await chmod(join(a, "install.d", "10-a"), 0o755);
  await writeFile(join(b, "install.d", "20-b"), "#!/bin/sh\n");
  await writeFile(join(b, "pkg-map"), "{}\n");
  const plan = {
    elements: [
      { name: "a", path: a, guestPath: "/vmdib/elements/0/a" },
      { name: "b", path: b, guestPath: "/vmdib/elements/0/b" },
    ],
    environment: {
      common: {
        IMAGE_ELEMENT: "a b",
        DIB_DEV_USER_AUTHORIZED_KEYS: join(root, "keys.pub"),
        DIB_X: "/nonexistent",
        DIB_MOUNTPOINTS: "/",
      },
      files: [],
    },
  } as unknown as BuildPlan;
  await writeFile(join(root, "keys.pub"), "ssh-ed25519 AAAA test\n");
  const dir = await makeWorkDir(plan, root);
  t.equal((await stat(dir)).mode & 0o777, 0o700, "work dir is private");
  t.equal((await stat(join(dir, "hooks", "install.d", "10-a"))).mode & 0o111, 0o111, "modes kept");
  t.ok(await stat(join(dir, "hooks", "install.d", "20-b")));
  t.ok(await stat(join(dir, "hooks", "pkg-map")));
  await t.rejects(stat(join(dir, "hooks", "tests")), "tests/ is not copied, as in DIB");
  t.equal(await readlink(join(dir, "elements", "a")), "/vmdib/elements/0/a");
  t.ok(await stat(join(dir, "dib", "run-phase")));
  t.match(await readFile(join(dir, "env"), "utf8"), /export IMAGE_ELEMENT='a b'/);
  t.match(buildEnvFile(plan), /export TMP_BUILD_DIR=\/vmdib\/build\n/);
  const env = await readFile(join(dir, "env"), "utf8");
  t.match(
    env,
    /export DIB_DEV_USER_AUTHORIZED_KEYS=\/vmdib\/work\/host-files\/DIB_DEV_USER_AUTHORIZED_KEYS\/keys.pub\n/,
    "a host file named by a DIB_* setting is copied and the setting points at the copy",
  );
  t.equal(
    await readFile(join(dir, "host-files", "DIB_DEV_USER_AUTHORIZED_KEYS", "keys.pub"), "utf8"),
    "ssh-ed25519 AAAA test\n",
  );
  t.match(env, /export DIB_X=\/nonexistent\n/, "paths that do not exist are left alone");
  t.match(env, /export DIB_MOUNTPOINTS=\/\n/, "directories are never copied");
});
