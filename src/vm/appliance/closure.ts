// Dependency closure (pure): which packages an appliance needs, following Depends and Pre-Depends like apt would.
import { VmdibError } from "../../errors.js";
import { type DebPackage, type PackageIndex, parseRelations, type Relation, satisfies } from "./packages.js";

export interface ClosureOptions {
  /** Names never pulled in; a dependency on one of them counts as satisfied (e.g. initramfs-tools). */
  exclude?: Iterable<string>;
  /** Architecture whose `[arch]` restrictions apply. */
  arch?: string;
}

export interface Closure {
  /** Selected packages, sorted by name. */
  packages: DebPackage[];
  /** Why each package is in: the package (or "requested") that first pulled it. */
  reasons: Map<string, string>;
}

/**
 * The closure of `roots` over Depends and Pre-Depends. Recommends are ignored. For an OR-group, a choice already made
 * wins; else the first alternative that the index can satisfy (a real package of a fitting version, else a provider of
 * the virtual name). Unsatisfiable dependencies are an error naming the chain.
 */
export function resolveClosure(index: PackageIndex, roots: string[], opts: ClosureOptions = {}): Closure {
  const exclude = new Set(opts.exclude ?? []);
  const arch = opts.arch ?? "amd64";
  const selected = new Map<string, DebPackage>();
  const reasons = new Map<string, string>();
  const queue: DebPackage[] = [];

  const add = (pkg: DebPackage, why: string) => {
    if (selected.has(pkg.name)) return;
    selected.set(pkg.name, pkg);
    reasons.set(pkg.name, why);
    queue.push(pkg);
  };

  for (const name of roots) {
    const pkg = index.packages.get(name);
    if (!pkg) {
      throw new VmdibError(`package '${name}' is not in the archive index`, {
        hint: "check the package name in guest/appliance.yaml against the suite it names",
      });
    }
    add(pkg, "requested");
  }

  const providerOf = (rel: Relation): DebPackage | undefined => {
    const real = index.packages.get(rel.name);
    if (real && satisfies(real.version, rel.op, rel.version)) return real;
    const provs = (index.providers.get(rel.name) ?? []).filter(
      (p) => !rel.op || (p.version !== undefined && satisfies(p.version, rel.op, rel.version)),
    );
    // Prefer a provider that is already in, then one not excluded; among those the higher Priority (mawk, which is
    // "required", over gawk for `awk`), then the name, for determinism.
    provs.sort((a, b) => priorityRank(a.pkg) - priorityRank(b.pkg) || a.pkg.name.localeCompare(b.pkg.name));
    return (
      provs.find((p) => selected.has(p.pkg.name))?.pkg ??
      provs.find((p) => !exclude.has(p.pkg.name))?.pkg ??
      provs[0]?.pkg
    );
  };

  const alreadySatisfied = (rel: Relation): boolean => {
    if (exclude.has(rel.name)) return true;
    const real = selected.get(rel.name);
    if (real && satisfies(real.version, rel.op, rel.version)) return true;
    return (index.providers.get(rel.name) ?? []).some(
      (p) =>
        (selected.has(p.pkg.name) || exclude.has(p.pkg.name)) &&
        (!rel.op || (p.version !== undefined && satisfies(p.version, rel.op, rel.version))),
    );
  };

  while (queue.length) {
    const pkg = queue.shift() as DebPackage;
    for (const group of [...parseRelations(pkg.preDepends), ...parseRelations(pkg.depends)]) {
      const alts = group.filter((r) => !r.archs || archMatches(r.archs, arch));
      if (!alts.length) continue;
      if (alts.some(alreadySatisfied)) continue;
      let chosen: DebPackage | undefined;
      for (const rel of alts) {
        const p = providerOf(rel);
        if (p && !exclude.has(p.name)) {
          chosen = p;
          break;
        }
      }
      if (!chosen) {
        const text = alts.map((r) => (r.op ? `${r.name} (${r.op} ${r.version})` : r.name)).join(" | ");
        throw new VmdibError(`cannot satisfy '${text}', needed by ${pkg.name} ${pkg.version}`, {
          hint: `chain: ${chainOf(pkg.name, reasons).join(" ← ")}; check guest/appliance.yaml (packages, exclude)`,
        });
      }
      add(chosen, pkg.name);
    }
  }
  const packages = [...selected.values()].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  return { packages, reasons };
}

const PRIORITIES = ["required", "important", "standard", "optional", "extra"];

function priorityRank(p: DebPackage): number {
  const i = PRIORITIES.indexOf(p.priority);
  return i < 0 ? PRIORITIES.length : i;
}

function archMatches(archs: string[], arch: string): boolean {
  const negated = archs.every((a) => a.startsWith("!"));
  if (negated) return !archs.includes(`!${arch}`);
  return archs.includes(arch) || archs.includes("any");
}

function chainOf(name: string, reasons: Map<string, string>): string[] {
  const chain = [name];
  let cur = reasons.get(name);
  while (cur && cur !== "requested" && chain.length < 20) {
    chain.push(cur);
    cur = reasons.get(cur);
  }
  return chain;
}
