// The 9p shares (src/vm/machine.ts, src/vm/qemu.ts) against a guest trying to get out, in one boot of the real
// appliance: `..` past a share's root, relative and absolute symlinks made by the guest and planted by the host,
// a symlinked directory, and writes into the read-only element share. The guest must find nothing of the host.
import { randomBytes } from "node:crypto";
import { readdir, readFile, symlink, writeFile } from "node:fs/promises";
import { join } from "node:path";
import t from "tap";
import type { Machine } from "../../src/vm/machine.js";
import { bootMachine, collector, tempDir } from "./helpers.js";

// A file of the host outside every share, with content that cannot appear anywhere by chance.
const TOKEN = `host-secret-${randomBytes(12).toString("hex")}`;
const outside = await tempDir("vmdib-test-outside-");
await writeFile(join(outside.path, "secret.txt"), `${TOKEN}\n`);
const work = await tempDir("vmdib-test-esc-work-");
const elements = await tempDir("vmdib-test-esc-el-");
await writeFile(join(elements.path, "hello.txt"), "element file\n");
// Links planted on the host side of the shares, pointing out of them.
const relTarget = join("..", outside.path.split("/").pop() ?? "", "secret.txt");
for (const dir of [work.path, elements.path]) {
  await symlink(join(outside.path, "secret.txt"), join(dir, "host-abs-link"));
  await symlink(relTarget, join(dir, "host-rel-link"));
  await symlink(outside.path, join(dir, "host-dir-link"));
}
let machine: Machine;
try {
  machine = await bootMachine({
    shares: [
      { hostPath: work.path, guestPath: "/vmdib/work", readonly: false },
      { hostPath: elements.path, guestPath: "/vmdib/elements/0", readonly: true },
    ],
  });
} catch (err) {
  for (const d of [work, elements, outside]) await d.done();
  throw err;
}
t.teardown(async () => {
  await machine.stop();
  for (const d of [work, elements, outside]) await d.done();
});

async function run(cmd: string) {
  const out = collector();
  const err = collector();
  const code = await machine.exec(cmd, { stdout: out.stream, stderr: err.stream });
  return { code, stdout: out.text(), stderr: err.text() };
}

t.test("`..` past a share's root stays in the guest", async (t) => {
  const r = await run(
    [
      "ls -a /vmdib/work/.. /vmdib/work/../.. /vmdib/elements/0/../..",
      "cat /vmdib/work/../../../../../etc/hostname",
      "cd /vmdib/work && cd ../../../.. && pwd",
    ].join("; "),
  );
  t.notOk(r.stdout.includes(TOKEN));
  t.notMatch(r.stdout, /vmdib-test-outside-/, "the host's temp directory is not listed");
  t.equal(r.stdout.trim().split("\n").pop(), "/", "cd .. ends at the guest's /");
});

t.test("symlinks planted by the host resolve in the guest, never to the host's files", async (t) => {
  for (const share of ["/vmdib/work", "/vmdib/elements/0"]) {
    const r = await run(
      `for l in host-abs-link host-rel-link host-dir-link/secret.txt; do cat ${share}/$l 2>&1; done; ls ${share}/host-dir-link/ 2>&1; true`,
    );
    t.notOk(r.stdout.includes(TOKEN), `${share}: the secret is not readable`);
    t.match(r.stdout, /No such file or directory/, `${share}: the targets are looked up in the guest`);
  }
});

t.test("symlinks made by the guest (relative and absolute) point into the guest only", async (t) => {
  const hostPath = join(outside.path, "secret.txt");
  const r = await run(
    [
      `ln -s ${hostPath} /vmdib/work/guest-abs-link`,
      `ln -s ../../../../../../${hostPath} /vmdib/work/guest-rel-link`,
      "ln -s / /vmdib/work/guest-root-link",
      "cat /vmdib/work/guest-abs-link /vmdib/work/guest-rel-link 2>&1",
      "ls /vmdib/work/guest-root-link/ 2>&1",
      `grep -rs ${TOKEN} /vmdib 2>/dev/null | head -1`,
      "true",
    ].join("; "),
  );
  t.equal(r.code, 0, r.stderr);
  t.notOk(r.stdout.includes(TOKEN), "no host file read through a guest-made link");
  t.match(r.stdout, /No such file or directory/);
  // On the host they are plain symlinks inside the share: QEMU did not follow them.
  t.ok((await readdir(work.path)).includes("guest-abs-link"));
});

t.test("the read-only element share refuses every kind of write; the host files stay as they were", async (t) => {
  const share = "/vmdib/elements/0";
  const attempts = [
    `touch ${share}/new`,
    `echo x >> ${share}/hello.txt`,
    `mkdir ${share}/d`,
    `ln -s /etc ${share}/l`,
    `rm ${share}/hello.txt`,
    `chmod 777 ${share}/hello.txt`,
    `mv ${share}/hello.txt ${share}/moved`,
  ];
  for (const cmd of attempts) {
    const r = await run(cmd);
    t.not(r.code, 0, cmd);
    t.match(r.stderr, /Read-only file system/, cmd);
  }
  t.equal(await readFile(join(elements.path, "hello.txt"), "utf8"), "element file\n");
  t.equal(await readFile(join(outside.path, "secret.txt"), "utf8"), `${TOKEN}\n`, "the outside file is untouched");
  t.same(
    (await readdir(elements.path)).sort(),
    ["hello.txt", "host-abs-link", "host-dir-link", "host-rel-link"],
    "nothing added or removed",
  );
});
