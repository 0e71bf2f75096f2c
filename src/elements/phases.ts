// The DIB phase table: every hook directory, in execution order, and where its scripts run.

/** Where a phase's scripts run: outside the chroot in the appliance, inside the chroot, or on the host. */
export type PhaseWhere = "host" | "appliance" | "chroot";

export interface PhaseSpec {
  /** Hook directory name inside an element, e.g. `install.d`. */
  readonly dir: string;
  /** Short phase name used by --break and in events, e.g. `install`. */
  readonly name: string;
  readonly where: PhaseWhere;
}

/**
 * The hook phases in the order disk-image-create runs them (lib/disk-image-create).
 * Steps without hooks (packages, image size, block device, copy, outputs) are added by the plan.
 */
export const PHASES: readonly PhaseSpec[] = [
  { dir: "root.d", name: "root", where: "appliance" },
  { dir: "extra-data.d", name: "extra-data", where: "appliance" },
  { dir: "pre-install.d", name: "pre-install", where: "chroot" },
  { dir: "install.d", name: "install", where: "chroot" },
  { dir: "post-install.d", name: "post-install", where: "chroot" },
  { dir: "post-root.d", name: "post-root", where: "appliance" },
  { dir: "block-device.d", name: "block-device", where: "appliance" },
  { dir: "pre-finalise.d", name: "pre-finalise", where: "appliance" },
  { dir: "finalise.d", name: "finalise", where: "chroot" },
  { dir: "cleanup.d", name: "cleanup", where: "appliance" },
];

export const PHASE_DIRS: ReadonlySet<string> = new Set(PHASES.map((p) => p.dir));
