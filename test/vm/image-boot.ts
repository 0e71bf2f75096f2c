// Tests testImage() (src/vm/image-boot.ts) on a real image vmdib built. It builds nothing itself: the image comes
// from VMDIB_TEST_IMAGE (the e2e build test calls testImage() on its own output). Optional: VMDIB_TEST_SSH_KEY and
// VMDIB_TEST_USER for the SSH check, VMDIB_TEST_UEFI=1 for UEFI images, VMDIB_TEST_TIMEOUT (seconds).
import { statSync } from "node:fs";
import t from "tap";
import { testImage } from "../../src/vm/image-boot.js";

const image = process.env.VMDIB_TEST_IMAGE;
if (!image) {
  t.plan(0, "VMDIB_TEST_IMAGE is not set: point it at an image `vmdib build` wrote (e.g. out/debian.qcow2)");
} else {
  t.test(`vmdib test ${image}`, async (t) => {
    const before = statSync(image);
    const sshKey = process.env.VMDIB_TEST_SSH_KEY;
    const user = process.env.VMDIB_TEST_USER;
    const report = await testImage({
      image,
      uefi: process.env.VMDIB_TEST_UEFI === "1",
      timeoutMs: (Number(process.env.VMDIB_TEST_TIMEOUT) || 300) * 1000,
      ...(sshKey && user ? { sshKey, user } : {}),
      log: (line) => t.comment(line),
    });
    for (const c of report.checks) t.comment(`${c.status.toUpperCase()} ${c.title}: ${c.detail}`);
    t.equal(
      report.passed,
      true,
      `the image passes every check${report.passed ? "" : `\n${report.serialTail.join("\n")}`}`,
    );
    t.equal(report.checks.find((c) => c.id === "login-prompt")?.status, "pass");
    t.equal(report.checks.find((c) => c.id === "root-by-label")?.status, "pass");
    if (sshKey && user) t.equal(report.checks.find((c) => c.id === "ssh")?.status, "pass");
    const after = statSync(image);
    t.equal(after.mtimeMs, before.mtimeMs, "-snapshot: the image file is not changed by the test");
    t.equal(after.size, before.size);
  });
}
