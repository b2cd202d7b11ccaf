// One-shot initialisation of the MongoDB replica set for gobi (run by the mongo-init
// service with mongosh, as the root user). Idempotent: safe on every `docker compose up`.
//
// 1. rs.initiate() with the three members, unless the set is already initiated.
// 2. Wait for a primary.
// 3. Create gobi's database user from the same URL secret gobi connects with
//    (/run/secrets/gobi_metadata_url), so the password lives in one place.

const fs = require("fs");
const members = ["mongo1:27017", "mongo2:27017", "mongo3:27017"];

function initiated() {
  try {
    rs.status();
    return true;
  } catch (e) {
    if (e.codeName === "NotYetInitialized" || e.code === 94) return false;
    throw e;
  }
}

if (!initiated()) {
  rs.initiate({
    _id: "rs0",
    members: members.map((host, i) => ({ _id: i, host: host, priority: i === 0 ? 2 : 1 })),
  });
  print("replica set rs0 initiated");
}

for (let i = 0; i < 120; i++) {
  const hello = db.adminCommand({ hello: 1 });
  if (hello.isWritablePrimary || hello.primary) break;
  sleep(1000);
}

const url = fs.readFileSync("/run/secrets/gobi_metadata_url", "utf8").trim();
const m = url.match(/^mongodb(?:\+srv)?:\/\/([^:@\/]+):([^@\/]+)@[^\/]+\/([^?]+)/);
if (!m) throw new Error("gobi_metadata_url must look like mongodb://USER:PASSWORD@hosts/DB?...");
const [user, password, dbName] = [decodeURIComponent(m[1]), decodeURIComponent(m[2]), m[3]];
const target = db.getSiblingDB(dbName);
if (target.getUser(user) === null) {
  target.createUser({ user: user, pwd: password, roles: [{ role: "readWrite", db: dbName }] });
  print(`user ${user} created on ${dbName}`);
} else {
  target.updateUser(user, { pwd: password, roles: [{ role: "readWrite", db: dbName }] });
}
