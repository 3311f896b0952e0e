-- wrk script: each request shares OID with a new email audience. Env: TOKEN, OID.
local counter = 0

function setup(thread)
   counter = counter + 1
   thread:set("tid", counter)
end

function init(args)
   n = 0
   token = os.getenv("TOKEN")
   oid = os.getenv("OID")
end

function request()
   n = n + 1
   local body = string.format(
      '{"oid":"%s","audience":{"claim":"email","value":"s%d-%d@bench"},"role":"reader"}',
      oid, tid, n)
   return wrk.format("POST", "/shares", {
      ["Content-Type"] = "application/json",
      ["userpolicy"] = token,
   }, body)
end

function response(status, headers, body)
   if status ~= 201 then
      errors = (errors or 0) + 1
      if errors < 5 then io.stderr:write("status " .. status .. ": " .. body .. "\n") end
   end
end
