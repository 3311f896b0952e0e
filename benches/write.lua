-- wrk script: each request is a one-event transaction creating a uniquely named folder
-- under PARENT. Env: TOKEN, PARENT, and PREFIX (default "w") to tell apart the names of
-- several wrk instances writing into one folder.
local counter = 0
local threads = {}

function setup(thread)
   counter = counter + 1
   thread:set("tid", counter)
   table.insert(threads, thread)
end

function init(args)
   n = 0
   token = os.getenv("TOKEN")
   parent = os.getenv("PARENT")
   prefix = os.getenv("PREFIX") or "w"
   boundary = "vellumbenchboundary"
end

function request()
   n = n + 1
   local meta = string.format(
      '[{"action":"C","parentoid":"%s","name":"%s%d-%d","security":{"label":"BENCH"}}]',
      parent, prefix, tid, n)
   local body = "--" .. boundary .. "\r\n" ..
      'Content-Disposition: form-data; name="metadata"\r\n\r\n' ..
      meta .. "\r\n--" .. boundary .. "--\r\n"
   return wrk.format("POST", "/write", {
      ["Content-Type"] = "multipart/form-data; boundary=" .. boundary,
      ["userpolicy"] = token,
   }, body)
end

function response(status, headers, body)
   if status ~= 200 then
      errors = (errors or 0) + 1
      if errors < 5 then io.stderr:write("status " .. status .. ": " .. body .. "\n") end
   end
end
