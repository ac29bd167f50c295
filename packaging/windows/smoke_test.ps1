# Windows smoke test (release workflow): install silently for this user, run the installed app's
# self-test (window, starter model, a few tokens, a screenshot), `hearth models`, `hearth chat`,
# then uninstall and check the user's data stays.
$ErrorActionPreference = "Stop"
Set-Location (Join-Path $PSScriptRoot "..\..")
$setup = (Get-ChildItem dist\hearth-*-setup.exe | Select-Object -First 1).FullName
$dest = Join-Path $env:RUNNER_TEMP "Hearth"
Start-Process -Wait -FilePath $setup -ArgumentList "/S", "/D=$dest"
$env:HEARTH_HOME = Join-Path $env:RUNNER_TEMP "hearth-home"
& "$dest\hearth.exe" --version
& "$dest\hearth.exe" --self-test (Join-Path (Resolve-Path dist).Path "self-test-windows.png")
if ($LASTEXITCODE -ne 0) { throw "self-test failed" }
& "$dest\hearth.exe" models
& "$dest\hearth.exe" chat gemma-3-270m-q4_k_m -p "The capital of France is" --max-tokens 8
if ($LASTEXITCODE -ne 0) { throw "chat failed" }
Start-Process -Wait -FilePath "$dest\Uninstall Hearth.exe" -ArgumentList "/S", "_?=$dest"
if (Test-Path "$dest\hearth.exe") { throw "the uninstaller left the program" }
if (-not (Test-Path "$env:HEARTH_HOME\data\models")) { throw "the uninstaller removed the user's data" }
