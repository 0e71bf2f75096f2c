import t from "tap";
import { cacheDir } from "../src/paths.js";

t.test("cacheDir follows XDG on Linux and ~/Library/Caches on macOS", async (t) => {
  t.equal(cacheDir({ HOME: "/home/u" }, "linux"), "/home/u/.cache/vmdib");
  t.equal(cacheDir({ HOME: "/home/u", XDG_CACHE_HOME: "/x" }, "linux"), "/x/vmdib");
  t.equal(cacheDir({ HOME: "/Users/u" }, "darwin"), "/Users/u/Library/Caches/vmdib");
  t.equal(cacheDir({ HOME: "/home/u", VMDIB_CACHE_DIR: "/c" }, "linux"), "/c");
});
