"""mille serve throughput: 10 PRs with 3,000-change plans (about 6 MiB each) sent as signed
webhooks to a release `mille serve` (embedded Weir, default workers), against a GitHub stub
that answers at once; measures from the first webhook to the tenth comment. Prints one line
of JSON. Run by bench/mille_serve.sh."""

import hashlib, hmac, http.server, json, subprocess, sys, tempfile, threading, time, urllib.request

MILLE, PRS, CHANGES = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
SECRET = b"bench-secret"
posted = []
lock = threading.Lock()

class Stub(http.server.BaseHTTPRequestHandler):
    def log_message(self, *a):
        pass
    def reply(self, body):
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
    def do_GET(self):
        self.reply([])
    def do_POST(self):
        n = int(self.headers.get("content-length", 0))
        self.rfile.read(n)
        with lock:
            posted.append(time.time())
            cid = len(posted)
        self.reply({"id": cid})

stub = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Stub)
threading.Thread(target=stub.serve_forever, daemon=True).start()
github = f"http://127.0.0.1:{stub.server_address[1]}"

data = tempfile.mkdtemp()
proc = subprocess.Popen([MILLE, "serve", "--listen", "127.0.0.1:0", "--secret", SECRET.decode(),
                         "--github-api", github, "--data-dir", data], stdout=subprocess.PIPE, text=True)
line = proc.stdout.readline()
base = [w for w in line.split() if w.startswith("http://")][0]
workers = line.split("weir: ")[1].split(", ")[1].split(" ")[0]

plan = json.loads(subprocess.check_output([MILLE, "synth", str(CHANGES), "20", "--bytes", "2000"]))
bodies = []
for pr in range(1, PRS + 1):
    body = json.dumps({"repository": {"full_name": "acme/infra"}, "pull_request": {"number": pr}, "plan": plan}).encode()
    sig = "sha256=" + hmac.new(SECRET, body, hashlib.sha256).hexdigest()
    bodies.append((body, sig))

start = time.time()
for body, sig in bodies:
    req = urllib.request.Request(base + "/webhook", data=body, method="POST",
                                 headers={"content-type": "application/json", "x-hub-signature-256": sig})
    assert urllib.request.urlopen(req).status == 202
accepted = time.time() - start
while True:
    with lock:
        if len(posted) >= PRS:
            break
    time.sleep(0.01)
done = time.time() - start
proc.terminate()
proc.wait()
print(json.dumps({"prs": PRS, "changes": CHANGES, "mb_per_plan": round(len(bodies[0][0]) / 2**20, 1),
                  "workers": int(workers), "accepted_s": round(accepted, 2), "all_commented_s": round(done, 2),
                  "plans_per_s": round(PRS / done, 1)}))
