// Publish an event to a room from Node.js (18+, built-in fetch).
//   IOCLUSTER_ADMIN_URL=http://127.0.0.1:8081 IOCLUSTER_API_KEY=... node node.mjs news hello
const [room, text] = process.argv.slice(2);
const response = await fetch(`${process.env.IOCLUSTER_ADMIN_URL}/api/v1/publish`, {
  method: "POST",
  headers: {
    authorization: `Bearer ${process.env.IOCLUSTER_API_KEY}`,
    "content-type": "application/json",
  },
  body: JSON.stringify({ event: "news", args: [{ text }], to: { rooms: [room] } }),
});
const result = await response.json();
if (!response.ok) {
  console.error(result.error);
  process.exit(1);
}
console.log(result);
