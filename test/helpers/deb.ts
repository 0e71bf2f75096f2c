// Builds small binary packages with the host's dpkg-deb, for the tests of what vmdib does with .debs.
import { randomBytes } from "node:crypto";
import { mkdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { execa } from "execa";

/**
 * A .deb in `dir` built with `dpkg-deb -Z<compression>`, its data holding `bytes` of random (incompressible) data
 * plus a 3-byte file (so the data member's size is odd now and then: ar pads it).
 */
export async function buildDeb(dir: string, compression: string, bytes = 300_000): Promise<string> {
  const root = join(dir, `pkg-${compression}-${bytes}`);
  await mkdir(join(root, "DEBIAN"), { recursive: true });
  await mkdir(join(root, "usr/share/vmdib-test"), { recursive: true });
  await writeFile(
    join(root, "DEBIAN/control"),
    "Package: vmdib-test\nVersion: 1.0\nArchitecture: all\nMaintainer: vmdib <vmdib@localhost>\nDescription: test\n",
  );
  await writeFile(join(root, "usr/share/vmdib-test/data"), randomBytes(bytes));
  await writeFile(join(root, "usr/share/vmdib-test/odd"), "x".repeat(3));
  const out = join(dir, `vmdib-test-${compression}-${bytes}.deb`);
  await execa("dpkg-deb", ["--root-owner-group", `-Z${compression}`, "--build", root, out]);
  return out;
}
