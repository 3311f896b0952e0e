-- wrk script for benches/blobs.sh: each request is an S3 PutObject of the bytes of BODY_FILE
-- (4 KiB) to a unique key BUCKET/k<thread>-<counter>. Env: BODY_FILE, BUCKET, HOSTPORT.
-- With AK and SK set, every request is signed with AWS SigV4 (region us-east-1, service s3)
-- and carries the body's real SHA-256 in x-amz-content-sha256, so the server verifies the
-- payload as in the 1 GiB test; without them the requests are unsigned (s3s-fs started
-- without keys). SHA-256 and HMAC are written here on LuaJIT's bit library (wrk has no
-- crypto); `wrk ... -s benches/s3put4k.lua -- selftest` checks them against known vectors.
local bit = require("bit")
local band, bor, bxor, bnot = bit.band, bit.bor, bit.bxor, bit.bnot
local lshift, rshift, ror, tobit, tohex = bit.lshift, bit.rshift, bit.ror, bit.tobit, bit.tohex
local byte, char, rep, concat = string.byte, string.char, string.rep, table.concat

-- Round constants and initial state: the first 32 bits of the fractional parts of the cube
-- roots of the first 64 primes, and of the square roots of the first 8.
local K, H0 = {}, {}
do
   local primes, p = {}, 2
   while #primes < 64 do
      local isprime = true
      for _, q in ipairs(primes) do
         if q * q > p then break end
         if p % q == 0 then isprime = false break end
      end
      if isprime then primes[#primes + 1] = p end
      p = p + 1
   end
   local function frac32(x) return tobit(math.floor((x - math.floor(x)) * 2 ^ 32)) end
   for i = 1, 64 do K[i] = frac32(primes[i] ^ (1 / 3)) end
   for i = 1, 8 do H0[i] = frac32(math.sqrt(primes[i])) end
end

local w = {}
local function sha256(msg)
   local len = #msg
   local bits = len * 8
   local pad = (55 - len) % 64
   msg = msg .. "\128" .. rep("\0", pad)
   local hi, lo = math.floor(bits / 2 ^ 32), bits % 2 ^ 32
   msg = msg .. char(band(rshift(hi, 24), 255), band(rshift(hi, 16), 255), band(rshift(hi, 8), 255), band(hi, 255),
      band(rshift(lo, 24), 255), band(rshift(lo, 16), 255), band(rshift(lo, 8), 255), band(lo, 255))
   local h1, h2, h3, h4, h5, h6, h7, h8 = H0[1], H0[2], H0[3], H0[4], H0[5], H0[6], H0[7], H0[8]
   for i = 1, #msg, 64 do
      for j = 0, 15 do
         local a, b, c, d = byte(msg, i + j * 4, i + j * 4 + 3)
         w[j] = bor(lshift(a, 24), lshift(b, 16), lshift(c, 8), d)
      end
      for j = 16, 63 do
         local x, y = w[j - 15], w[j - 2]
         local s0 = bxor(ror(x, 7), ror(x, 18), rshift(x, 3))
         local s1 = bxor(ror(y, 17), ror(y, 19), rshift(y, 10))
         w[j] = tobit(w[j - 16] + s0 + w[j - 7] + s1)
      end
      local a, b, c, d, e, f, g, h = h1, h2, h3, h4, h5, h6, h7, h8
      for j = 0, 63 do
         local S1 = bxor(ror(e, 6), ror(e, 11), ror(e, 25))
         local ch = bxor(band(e, f), band(bnot(e), g))
         local t1 = tobit(h + S1 + ch + K[j + 1] + w[j])
         local S0 = bxor(ror(a, 2), ror(a, 13), ror(a, 22))
         local maj = bxor(band(a, b), band(a, c), band(b, c))
         local t2 = tobit(S0 + maj)
         h, g, f, e, d, c, b, a = g, f, e, tobit(d + t1), c, b, a, tobit(t1 + t2)
      end
      h1, h2, h3, h4 = tobit(h1 + a), tobit(h2 + b), tobit(h3 + c), tobit(h4 + d)
      h5, h6, h7, h8 = tobit(h5 + e), tobit(h6 + f), tobit(h7 + g), tobit(h8 + h)
   end
   local out = {}
   for k, x in ipairs({ h1, h2, h3, h4, h5, h6, h7, h8 }) do
      out[k] = char(band(rshift(x, 24), 255), band(rshift(x, 16), 255), band(rshift(x, 8), 255), band(x, 255))
   end
   return concat(out)
end

local function hex(s)
   return (s:gsub(".", function(c) return tohex(byte(c), 2) end))
end

local function xorpad(key, v)
   local out = {}
   for i = 1, 64 do out[i] = char(bxor(byte(key, i), v)) end
   return concat(out)
end

local function hmac(key, msg)
   if #key > 64 then key = sha256(key) end
   key = key .. rep("\0", 64 - #key)
   return sha256(xorpad(key, 0x5c) .. sha256(xorpad(key, 0x36) .. msg))
end

local function selftest()
   local cases = {
      { sha256(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855" },
      { sha256("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad" },
      { sha256("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"),
         "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1" },
      { sha256(rep("a", 1000)), "41edece42d63e8d9bf515a9ba6932e1c20cbc9f5a5d134645adb5db1b9737ea3" },
      -- RFC 4231 test cases 1 and 2
      { hmac(rep("\11", 20), "Hi There"), "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7" },
      { hmac("Jefe", "what do ya want for nothing?"),
         "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843" },
   }
   for i, c in ipairs(cases) do
      if hex(c[1]) ~= c[2] then error("sha256/hmac self-test " .. i .. " failed: " .. hex(c[1])) end
   end
end

local counter = 0

function setup(thread)
   counter = counter + 1
   thread:set("tid", counter)
end

function init(args)
   if args[1] == "selftest" then
      selftest()
      io.stderr:write("sha256/hmac self-test passed\n")
   end
   n = 0
   bucket = os.getenv("BUCKET")
   hostport = os.getenv("HOSTPORT")
   ak, sk = os.getenv("AK"), os.getenv("SK")
   local f = assert(io.open(os.getenv("BODY_FILE"), "rb"))
   data = f:read("*a")
   f:close()
   payload_hash = hex(sha256(data))
   local want = os.getenv("BODY_SHA256")
   if want and want ~= payload_hash then error("sha256 of BODY_FILE disagrees with BODY_SHA256") end
   signing_day, signing_key = nil, nil
end

local function signed_headers(path)
   local amz_date = os.date("!%Y%m%dT%H%M%SZ")
   local day = amz_date:sub(1, 8)
   if day ~= signing_day then
      signing_day = day
      signing_key = hmac(hmac(hmac(hmac("AWS4" .. sk, day), "us-east-1"), "s3"), "aws4_request")
   end
   local canonical = concat({
      "PUT", path, "",
      "host:" .. hostport, "x-amz-content-sha256:" .. payload_hash, "x-amz-date:" .. amz_date, "",
      "host;x-amz-content-sha256;x-amz-date", payload_hash }, "\n")
   local scope = day .. "/us-east-1/s3/aws4_request"
   local to_sign = concat({ "AWS4-HMAC-SHA256", amz_date, scope, hex(sha256(canonical)) }, "\n")
   return {
      ["Host"] = hostport,
      ["Content-Type"] = "application/octet-stream",
      ["x-amz-date"] = amz_date,
      ["x-amz-content-sha256"] = payload_hash,
      ["Authorization"] = "AWS4-HMAC-SHA256 Credential=" .. ak .. "/" .. scope ..
         ", SignedHeaders=host;x-amz-content-sha256;x-amz-date, Signature=" .. hex(hmac(signing_key, to_sign)),
   }
end

function request()
   n = n + 1
   local path = string.format("/%s/k%d-%d", bucket, tid, n)
   local headers
   if ak and sk then
      headers = signed_headers(path)
   else
      headers = { ["Host"] = hostport, ["Content-Type"] = "application/octet-stream" }
   end
   return wrk.format("PUT", path, headers, data)
end

function response(status, hdrs, body)
   if status ~= 200 then
      errors = (errors or 0) + 1
      if errors <= 3 then io.stderr:write("status " .. status .. ": " .. body .. "\n") end
   end
end
