# Windows: the PyInstaller folder, then the NSIS installer (release workflow, windows-2022).
# llama.cpp is compiled with MSVC with every CPU variant as a loadable backend, as on Linux
# (packaging/llama_backends.cmake installs the variants into the wheel), the RPC backend
# (`hearth rpc-worker`, models split across machines) and the Vulkan backend (AMD, Intel and NVIDIA GPUs; ggml
# loads it only where a Vulkan driver answers). Vulkan needs the Vulkan SDK (VULKAN_SDK; the release workflow
# installs it); without it, set $env:HEARTH_VULKAN = "off" to build for the CPU alone.
$ErrorActionPreference = "Stop"
Set-Location (Join-Path $PSScriptRoot "..\..")
$version = (python -c "import tomllib; print(tomllib.load(open('pyproject.toml','rb'))['project']['version'])").Trim()
python -m venv .venv
$py = ".venv\Scripts\python.exe"
& $py -m pip install -q --upgrade pip
$hook = (Resolve-Path "packaging\llama_backends.cmake").Path -replace '\\', '/'
$vulkan = if ($env:HEARTH_VULKAN -eq "off") { "" } else { "-DGGML_VULKAN=ON" }
if ($vulkan -and -not $env:VULKAN_SDK) { throw "the Vulkan SDK is not installed (VULKAN_SDK is unset): install it, or set HEARTH_VULKAN=off" }
$env:CMAKE_ARGS = "-DGGML_NATIVE=OFF -DGGML_BACKEND_DL=ON -DGGML_CPU_ALL_VARIANTS=ON -DLLAVA_BUILD=OFF -DGGML_RPC=ON $vulkan -DCMAKE_PROJECT_INCLUDE=$hook $env:EXTRA_CMAKE_ARGS"
& $py -m pip install -q --no-cache-dir "llama-cpp-python==0.3.36"
if ($LASTEXITCODE -ne 0) { throw "llama-cpp-python did not build" }
& $py -m pip install -q -c packaging\constraints.txt -e ".[desktop,package]"
& $py -m PyInstaller --noconfirm --log-level WARN --distpath build\package\dist --workpath build\package\pyinstaller packaging\hearth.spec
if ($LASTEXITCODE -ne 0) { throw "PyInstaller failed" }
New-Item -ItemType Directory -Force dist | Out-Null
$app = (Resolve-Path "build\package\dist\hearth").Path
$out = Join-Path (Resolve-Path "dist").Path "hearth-$version-windows-x86_64$($env:VARIANT_SUFFIX)-setup.exe"
& makensis "-DVERSION=$version" "-DAPPDIR=$app" "-DOUTFILE=$out" packaging\windows\hearth.nsi
if ($LASTEXITCODE -ne 0) { throw "makensis failed" }
Get-Item $out | Select-Object Name, Length
