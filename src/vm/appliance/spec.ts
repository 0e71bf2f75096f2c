// guest/appliance.yaml → ApplianceSpec (the one declaration of the appliance's packages and kernel modules).
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { parse } from "yaml";
import { VmdibError } from "../../errors.js";

export interface ApplianceSpec {
  suite: string;
  arch: string;
  /** Kernel package or meta-package (a flavour with 9p: the generic one, not `cloud`). */
  kernel: string;
  packages: string[];
  /** Packages never pulled in; dependencies on them count as satisfied. */
  exclude: string[];
  /** Also install the suite's Essential packages (other packages assume them without declaring them). */
  essential: boolean;
  /** Kernel modules shipped in the initramfs (with their dependencies); the kernel loads them on demand. */
  modules: string[];
  /**
   * Modules the init loads before it says ready, because nothing would load them on demand: their device nodes
   * (/dev/loop-control, /dev/mapper/control) only appear once the driver is in. Each must be in `modules`.
   */
  preload: string[];
  /** Extra path prefixes (like "usr/include/") left out of the initramfs, on top of docs, man pages and locales. */
  drop: string[];
  /** The YAML text itself (part of the cache key). */
  text: string;
}

/** Parse and validate appliance.yaml text. */
export function parseApplianceSpec(text: string, file = "guest/appliance.yaml"): ApplianceSpec {
  let doc: unknown;
  try {
    doc = parse(text);
  } catch (err) {
    throw new VmdibError(`${file} is not valid YAML`, { cause: err, hint: String((err as Error).message) });
  }
  const o = (doc ?? {}) as Record<string, unknown>;
  const list = (k: string, required: boolean): string[] => {
    const v = o[k];
    if (v === undefined && !required) return [];
    if (!Array.isArray(v) || v.some((x) => typeof x !== "string")) {
      throw new VmdibError(`${file}: '${k}' must be a list of names`);
    }
    return v as string[];
  };
  const str = (k: string, dflt?: string): string => {
    const v = o[k] ?? dflt;
    if (typeof v !== "string" || !v) throw new VmdibError(`${file}: '${k}' must be a non-empty string`);
    return v;
  };
  const modules = list("modules", true);
  const stray = list("preload", false).filter((m) => !modules.includes(m));
  if (stray.length) {
    throw new VmdibError(`${file}: preload names modules not in 'modules': ${stray.join(", ")}`, {
      hint: "add them to 'modules' too: only shipped modules can be loaded",
    });
  }
  return {
    suite: str("suite"),
    arch: str("arch", "amd64"),
    kernel: str("kernel"),
    packages: list("packages", true),
    exclude: list("exclude", false),
    essential: o.essential === undefined ? true : o.essential === true,
    modules,
    preload: list("preload", false),
    drop: list("drop", false),
    text,
  };
}

export function loadApplianceSpec(guestDir: string): ApplianceSpec {
  const file = join(guestDir, "appliance.yaml");
  let text: string;
  try {
    text = readFileSync(file, "utf8");
  } catch (err) {
    throw new VmdibError(`cannot read ${file}`, { cause: err, hint: "the vmdib installation is incomplete" });
  }
  return parseApplianceSpec(text, file);
}
