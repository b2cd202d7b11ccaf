import json, random, shutil, os, re
from .test_stress import run_workers
from .mounts import server_node

def events(user, vault):
    out, after = [], 0
    while True:
        r = user.api.get(f"/vaults/{vault}/events", params={"after": after, "limit": 1000}).json()
        out += r["events"]
        if not r["events"]:
            return out
        after = r["events"][-1]["seq"]

def analyse(user, vault):
    evs = events(user, vault)
    cs = user.api.get(f"/vaults/{vault}/conflicts", params={"state": "all"}).json()
    cs = cs.get("conflicts", cs) if isinstance(cs, dict) else cs
    cs = sorted(cs, key=lambda c: c["ts"])
    print("NCONFLICTS", len(cs))
    names = {}
    for ev in evs:
        node = ev.get("node") or {}
        if node.get("id"):
            names[node["id"]] = node.get("name")
    for c in cs[:2]:
        print("CONFLICT", json.dumps(c)[:900])
        nid = c["node"]
        mine = c.get("mine") or {}
        base = c["path"].rsplit("/", 1)[-1].split(" (")[0]
        parents = {(ev.get("node") or {}).get("parent") for ev in evs if (ev.get("node") or {}).get("id") == nid}
        for ev in evs:
            node = ev.get("node") or {}
            if node.get("id") == nid or (node.get("name") == base and node.get("parent") in parents) or (mine.get("parent") and node.get("parent") == mine.get("parent") and node.get("name") == mine.get("name")):
                print("EV", ev["seq"], ev["type"], node.get("id"), node.get("name"), node.get("parent"), "rev", node.get("rev"), "inode", node.get("inode"), "del", node.get("deleted"), "old", ev.get("old_parent"), ev.get("old_name"))

def test_dbg(mnt, tmp_path, user, vault):
    for i in range(8):
        seed = random.randrange(1 << 31)
        try:
            run_workers(mnt.path / f"stress{i}", seed, 3000, mnt.log)
        except AssertionError as exc:
            open("/tmp/mountlog.txt", "w").write(mnt.log())
            open("/tmp/failure.txt", "w").write(str(exc))
            m = re.search(r"(p\d[^:]*): listing (\[[^\]]*\]), the model has (\[[^\]]*\])", str(exc))
            if m:
                rel, got, want = m.group(1), eval(m.group(2)), eval(m.group(3))
                for x in set(got) - set(want):
                    path = mnt.path / f"stress{i}" / rel / x
                    st = os.lstat(path)
                    print("EXTRA", path, "ino", st.st_ino, "nlink", st.st_nlink, "size", st.st_size, oct(st.st_mode))
                    sn = server_node(user, vault, f"stress{i}/{rel}/{x}")
                    print("SERVER", sn)
                    pn = server_node(user, vault, f"stress{i}/{rel}")
                    evs = events(user, vault)
                    for ev in evs:
                        node = ev.get("node") or {}
                        if (node.get("parent") == pn["id"] and node.get("name") == x) or (sn and node.get("id") == sn["id"]) or (sn and sn.get("inode") and node.get("inode") == sn.get("inode")):
                            print("EV", ev["seq"], ev["type"], node.get("id"), node.get("name"), node.get("parent"), "rev", node.get("rev"), "inode", node.get("inode"), "del", node.get("deleted"))
            analyse(user, vault)
            raise
        mnt.sync(timeout=60)
        r = mnt.verify()
        log = mnt.log()
        open("/tmp/mountlog.txt", "w").write(log)
        conflicts = [l for l in log.splitlines() if "conflict on" in l]
        if r["difference_count"] or conflicts:
            print("SEED", seed, json.dumps(r, indent=1)[:3000])
            analyse(user, vault)
            assert False
        print("ok", seed)
