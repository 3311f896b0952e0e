-- wrk script: GET the path given on the command line with the userpolicy header. Env: TOKEN.
function init(args)
   wrk.headers["userpolicy"] = os.getenv("TOKEN")
end

function response(status, headers, body)
   if status ~= 200 then
      errors = (errors or 0) + 1
      if errors < 5 then io.stderr:write("status " .. status .. ": " .. body .. "\n") end
   end
end
