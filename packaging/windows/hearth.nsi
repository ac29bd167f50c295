; Hearth's Windows installer (NSIS 3). The release workflow compiles it on Windows against the
; PyInstaller folder; `make package-test` compiles it on Linux with Debian's makensis against the
; Linux folder, as a check that the script is valid (that installer is not run).
;
;   makensis -DVERSION=0.1.0 -DAPPDIR=build\package\dist\hearth -DOUTFILE=dist\hearth-0.1.0-windows-x86_64-setup.exe hearth.nsi
;   (-DFAST stores files uncompressed: for the Linux check, where only validity matters)

Unicode true
!include "MUI2.nsh"

!ifndef VERSION
  !error "pass -DVERSION=x.y.z (pyproject.toml's version)"
!endif
!ifndef APPDIR
  !error "pass -DAPPDIR=<the PyInstaller folder>"
!endif
!ifndef OUTFILE
  !define OUTFILE "hearth-${VERSION}-windows-x86_64-setup.exe"
!endif
!ifdef FAST
  SetCompress off
!else
  SetCompressor /SOLID lzma
!endif

Name "Hearth ${VERSION}"
OutFile "${OUTFILE}"
; Per-user install: no administrator prompt, like most desktop apps users install themselves.
InstallDir "$LOCALAPPDATA\Programs\Hearth"
InstallDirRegKey HKCU "Software\Hearth" "InstallDir"
RequestExecutionLevel user
BrandingText "Hearth ${VERSION}"

!define MUI_ABORTWARNING
!define MUI_FINISHPAGE_RUN "$INSTDIR\hearthw.exe"
!define MUI_FINISHPAGE_RUN_TEXT "Open Hearth"
!insertmacro MUI_PAGE_WELCOME
!insertmacro MUI_PAGE_DIRECTORY
!insertmacro MUI_PAGE_INSTFILES
!insertmacro MUI_PAGE_FINISH
!insertmacro MUI_UNPAGE_CONFIRM
!insertmacro MUI_UNPAGE_INSTFILES
!insertmacro MUI_LANGUAGE "English"

!define UNINSTALL_KEY "Software\Microsoft\Windows\CurrentVersion\Uninstall\Hearth"

Section "Hearth" SecMain
  SectionIn RO
  SetOutPath "$INSTDIR"
  ; An upgrade replaces the program files; the user's models, chats and adapters live in
  ; %LOCALAPPDATA%\Hearth (platformdirs) and are never touched here.
  RMDir /r "$INSTDIR\_internal"
  File /r "${APPDIR}\*"
  WriteUninstaller "$INSTDIR\Uninstall Hearth.exe"
  CreateShortcut "$SMPROGRAMS\Hearth.lnk" "$INSTDIR\hearthw.exe"  ; no console window
  WriteRegStr HKCU "Software\Hearth" "InstallDir" "$INSTDIR"
  WriteRegStr HKCU "${UNINSTALL_KEY}" "DisplayName" "Hearth"
  WriteRegStr HKCU "${UNINSTALL_KEY}" "DisplayVersion" "${VERSION}"
  WriteRegStr HKCU "${UNINSTALL_KEY}" "Publisher" "Hearth"
  WriteRegStr HKCU "${UNINSTALL_KEY}" "DisplayIcon" "$INSTDIR\hearthw.exe"
  WriteRegStr HKCU "${UNINSTALL_KEY}" "UninstallString" '"$INSTDIR\Uninstall Hearth.exe"'
  WriteRegDWORD HKCU "${UNINSTALL_KEY}" "NoModify" 1
  WriteRegDWORD HKCU "${UNINSTALL_KEY}" "NoRepair" 1
SectionEnd

Section "Uninstall"
  ; Removes the program only: models, chats, adapters and the training pack stay in the user's
  ; data folder, so a reinstall finds them.
  Delete "$SMPROGRAMS\Hearth.lnk"
  RMDir /r "$INSTDIR\_internal"
  Delete "$INSTDIR\hearth.exe"
  Delete "$INSTDIR\hearthw.exe"
  Delete "$INSTDIR\Uninstall Hearth.exe"
  RMDir "$INSTDIR"
  DeleteRegKey HKCU "${UNINSTALL_KEY}"
  DeleteRegKey HKCU "Software\Hearth"
SectionEnd
