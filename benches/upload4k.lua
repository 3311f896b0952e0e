-- wrk script for benches/blobs.sh: each request is a multipart POST /write whose one event
-- creates a uniquely named file (w<thread>-<counter>) under PARENT, with the bytes of
-- BODY_FILE (4 KiB) as its content part. Env: TOKEN, PARENT, BODY_FILE.
local counter = 0

function setup(thread)
   counter = counter + 1
   thread:set("tid", counter)
end

function init(args)
   n = 0
   token = os.getenv("TOKEN")
   parent = os.getenv("PARENT")
   local f = assert(io.open(os.getenv("BODY_FILE"), "rb"))
   data = f:read("*a")
   f:close()
   boundary = "vellum-blob-bench-0f4c2a9e71d85b36"
   head = "--" .. boundary .. "\r\n" ..
      'Content-Disposition: form-data; name="metadata"\r\n' ..
      "Content-Type: application/json\r\n\r\n"
   middle = "\r\n--" .. boundary .. "\r\n" ..
      'Content-Disposition: form-data; name="data"; filename="blob.bin"\r\n' ..
      "Content-Type: application/octet-stream\r\n\r\n"
   tail = "\r\n--" .. boundary .. "--\r\n"
   headers = {
      ["Content-Type"] = "multipart/form-data; boundary=" .. boundary,
      ["userpolicy"] = token,
   }
end

function request()
   n = n + 1
   local meta = string.format(
      '[{"action":"C","parentoid":"%s","name":"w%d-%d","isfile":true}]', parent, tid, n)
   return wrk.format("POST", "/write", headers, head .. meta .. middle .. data .. tail)
end

function response(status, hdrs, body)
   if status ~= 200 then
      errors = (errors or 0) + 1
      if errors <= 3 then io.stderr:write("status " .. status .. ": " .. body .. "\n") end
   end
end
